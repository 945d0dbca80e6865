"""
Tests for nanochat/cpu_linear.py: every CPU kernel choice computes x @ w^T and its gradients, checked against
F.linear and autograd in float64.

    python -m pytest tests/test_cpu_linear.py -q
"""
import platform

import pytest
import torch
import torch.nn.functional as F

from nanochat import cpu_linear
from nanochat.cpu_linear import OneDNNLinear, few_rows_linear, linear, onednn_available
from nanochat.gpt import Linear

torch.set_num_threads(1)
needs_onednn = pytest.mark.skipif(not onednn_available(), reason="oneDNN matmul not available in this torch build")


def data(*shape, n_out=40, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype), torch.randn(n_out, shape[-1], generator=g, dtype=dtype)


@pytest.mark.parametrize("shape", [(1, 1, 24), (2, 1, 24), (5, 24), (16, 1, 24), (3, 7, 24)])
def test_few_rows_linear_equals_f_linear(shape):
    x, w = data(*shape)
    y = few_rows_linear(x, w)
    assert y.shape == (*shape[:-1], 40) and y.is_contiguous()
    torch.testing.assert_close(y, F.linear(x, w), atol=1e-12, rtol=0)
    lin = Linear(24, 40).double()
    with torch.no_grad():
        lin.weight.copy_(w)
    torch.testing.assert_close(lin(x), F.linear(x, w), atol=1e-12, rtol=0)  # either path, same product


def test_onednn_is_used_on_x86():
    """Our CI box is x86-64 with torch's oneDNN: the fast path must not silently switch itself off there."""
    if platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available():
        assert onednn_available()


@needs_onednn
@pytest.mark.parametrize("shape", [(64, 48), (2, 32, 48), (3, 256, 48)])
def test_onednn_linear_forward_and_gradients(shape, monkeypatch):
    x64, w64 = data(*shape, n_out=96)
    x, w = x64.float().requires_grad_(), w64.float().requires_grad_()
    calls = []
    real = cpu_linear._onednn_mm
    monkeypatch.setattr(cpu_linear, "_onednn_mm", lambda a, b: calls.append(1) or real(a, b))
    y = linear(x, w)
    assert len(calls) == 1, "a multiple of 64 fp32 rows must go through oneDNN"
    x64.requires_grad_(), w64.requires_grad_()
    ref = F.linear(x64, w64)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    g64 = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y.backward(g64.float())
    ref.backward(g64)
    assert len(calls) == 2  # dx by oneDNN too (dw by torch.mm)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        assert torch.equal(linear(x, w), y)  # the same kernel with and without gradients: bitwise equal


@needs_onednn
def test_onednn_linear_strided_inputs_and_one_sided_gradients():
    xt, _ = data(64, 48, dtype=torch.float32)
    _, w = data(48, 64, n_out=32, seed=1, dtype=torch.float32)
    x = xt.t()  # (48, 64), a view with transposed strides
    w.requires_grad_()  # (32, 64)
    y = OneDNNLinear.apply(x, w)
    torch.testing.assert_close(y, x.contiguous() @ w.detach().t(), rtol=1e-5, atol=1e-5)
    y.sum().backward()  # x needs no gradient: only dw is made
    torch.testing.assert_close(w.grad, torch.ones(32, 48) @ x.contiguous(), rtol=1e-5, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize("rows", [1, 16, 17, 100, 320 + 1])
def test_other_row_counts_stay_off_onednn(rows, monkeypatch):
    """A decode step (<= 16 rows) and ragged row counts (prompts of any length) never build oneDNN kernels."""
    monkeypatch.setattr(cpu_linear, "_onednn_mm", lambda a, b: pytest.fail(f"{rows} rows went to oneDNN"))
    x, w = data(rows, 48, dtype=torch.float32)
    torch.testing.assert_close(linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_non_fp32_falls_back_to_f_linear():
    x, w = data(40, 24)  # float64: oneDNN has no fp64 matmul
    torch.testing.assert_close(linear(x, w), F.linear(x, w), atol=0, rtol=0)


# -----------------------------------------------------------------------------
# packed weights for batched decode steps (2-16 rows)


@needs_onednn
@pytest.mark.parametrize("rows", [4, 9, 16])
@pytest.mark.parametrize("n_out,n_in", [(40, 24), (512, 64), (64, 256)])
def test_packed_linear_equals_f_linear(rows, n_out, n_in, monkeypatch):
    x64, w64 = data(rows, 1, n_in, n_out=n_out)
    x, w = x64.float(), w64.float()
    packed = cpu_linear.pack_weight(w)
    calls = []
    real = cpu_linear.packed_linear
    monkeypatch.setattr(cpu_linear, "packed_linear", lambda *a: calls.append(1) or real(*a))
    y = linear(x, w, packed)
    assert calls == [1] and y.shape == (rows, 1, n_out) and y.is_contiguous()
    torch.testing.assert_close(y.double(), F.linear(x64, w64), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_packed_weight_is_used_only_where_it_is_safe(monkeypatch):
    x1, w = data(1, 1, 24, dtype=torch.float32)
    packed = cpu_linear.pack_weight(w)
    calls = []
    real = cpu_linear.packed_linear
    monkeypatch.setattr(cpu_linear, "packed_linear", lambda *a: calls.append(1) or real(*a))
    linear(x1, w, packed)  # one row: few_rows_linear (faster in a decode step)
    linear(torch.randn(3, 24), w, packed)  # and up to 3 rows
    linear(torch.randn(17, 24), w, packed)  # more than 16 rows: not a decode step
    linear(torch.randn(4, 24, requires_grad=True), w, packed)  # a gradient is needed: the packed op has none
    assert calls == []
    assert cpu_linear.pack_weight(w.double()) is None  # fp32 only


@needs_onednn
def test_packed_weights_context(monkeypatch):
    from nanochat.gpt import packed_weights
    model = torch.nn.Sequential(Linear(24, 40), torch.nn.ReLU(), Linear(40, 8))
    x = torch.randn(4, 24)
    with torch.no_grad():
        ref = model(x)
        with packed_weights(model):
            assert all(m.packed is not None for m in (model[0], model[2]))
            with packed_weights(model):  # nested: shares the copies, the inner exit keeps them
                assert model[0].packed_users == 2
            with packed_weights(model, rows=2):  # too few rows to pay off: packs nothing, drops nothing
                assert model[0].packed_users == 1
            assert model[0].packed is not None
            torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
            model[0].weight.mul_(2)  # changed in place: the stale copy must not be used
            calls = []
            real = cpu_linear.packed_linear
            monkeypatch.setattr(cpu_linear, "packed_linear", lambda *a: calls.append(1) or real(*a))
            h = model[0](x)
            assert calls == []
            torch.testing.assert_close(h, F.linear(x, model[0].weight), rtol=1e-6, atol=1e-6)
        assert model[0].packed is None and model[2].packed is None and model[0].packed_users == 0
