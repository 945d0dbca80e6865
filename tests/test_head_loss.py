"""
Tests for nanochat/head_loss.py: the chunked lm_head + softcap + cross-entropy equals the separate ops (loss and
both gradients, float64), ignored targets, chunk edges, and GPT.forward on CPU uses it without changing results.

    python -m pytest tests/test_head_loss.py -q
"""
import pytest
import torch
import torch.nn.functional as F

import nanochat.head_loss as head_loss
from nanochat.head_loss import softcapped_cross_entropy
from nanochat.gpt import GPTConfig, build_model

CAP = 15.0


def reference(x, w, y, reduction):
    return F.cross_entropy(CAP * torch.tanh(x @ w.T), y, ignore_index=-1, reduction=reduction)


def inputs(N=300, C=32, V=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, dtype=torch.float64, generator=g).requires_grad_()
    w = (0.5 * torch.randn(V, C, dtype=torch.float64, generator=g)).requires_grad_()
    y = torch.randint(0, V, (N,), generator=g)
    y[::7] = -1  # ignored positions
    return x, w, y


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("chunk_elements", [2**19, 3000])  # one chunk; many chunks with a ragged last one
def test_loss_and_gradients_match_separate_ops(reduction, chunk_elements, monkeypatch):
    monkeypatch.setattr(head_loss, "CHUNK_ELEMENTS", chunk_elements)
    x, w, y = inputs()
    fused = softcapped_cross_entropy(x, w, y, CAP, reduction)
    gx, gw = torch.autograd.grad(1.7 * fused, (x, w))  # a non-unit upstream gradient
    ref = reference(x, w, y, reduction)
    rx, rw = torch.autograd.grad(1.7 * ref, (x, w))
    torch.testing.assert_close(fused, ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(gx, rx, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(gw, rw, atol=1e-12, rtol=1e-10)
    assert gx[::7].abs().max() == 0  # ignored rows get no gradient


def test_second_backward_is_refused():
    # backward scales the saved gradients in place, so a second pass through the same graph would be wrong
    x, w, y = inputs(N=20)
    loss = softcapped_cross_entropy(x, w, y, CAP, "mean")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()


def test_per_row_losses_without_gradients_and_no_grad_means():
    x, w, y = inputs()
    with torch.no_grad():
        torch.testing.assert_close(softcapped_cross_entropy(x, w, y, CAP, "none"), reference(x, w, y, "none"))
        torch.testing.assert_close(softcapped_cross_entropy(x, w, y, CAP, "mean"), reference(x, w, y, "mean"))
    assert torch.isnan(softcapped_cross_entropy(x, w, torch.full_like(y, -1), CAP, "mean"))  # like F.cross_entropy


def test_bad_arguments_are_named():
    x, w, y = inputs(N=8)
    with pytest.raises(ValueError, match="only supported without gradients"):
        softcapped_cross_entropy(x, w, y, CAP, "none")
    with pytest.raises(ValueError, match="reduction"):
        softcapped_cross_entropy(x, w, y, CAP, "max")
    with pytest.raises(ValueError, match="softcap"):
        softcapped_cross_entropy(x, w, y, 100.0, "sum")


def test_gpt_forward_on_cpu_matches_the_unfused_logits_path():
    torch.manual_seed(0)
    config = GPTConfig(sequence_len=32, vocab_size=300, n_layer=2, n_head=2, n_kv_head=1, n_embd=64)
    model = build_model(config, torch.device("cpu"), torch.float32)
    with torch.no_grad():  # lm_head starts at zero; give it values so the test means something
        model.lm_head.weight.normal_(0, 0.1)
        for block in model.transformer.h:
            block.attn.c_proj.weight.normal_(0, 0.05)
    x = torch.randint(0, 300, (3, 32))
    y = torch.randint(0, 300, (3, 32))
    y[:, :5] = -1
    fused = model(x, y)  # CPU: the chunked head
    fused.backward()
    fused_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    ref = F.cross_entropy(model(x).view(-1, 300), y.view(-1), ignore_index=-1)  # logits, then the loss
    ref.backward()
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    for a, p in zip(fused_grads, model.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        per_token = model(x, y, loss_reduction="none")  # (B, T), as loss_eval uses it
    assert per_token.shape == (3, 32) and per_token[:, :5].abs().max() == 0
    torch.testing.assert_close(per_token.sum() / (y != -1).sum(), ref.detach(), atol=1e-5, rtol=1e-5)
