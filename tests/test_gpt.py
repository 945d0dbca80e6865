"""
Tests for nanochat/gpt.py: against naive references (hand-written attention, a hand FLOP count, a
reference KV cache written from the contract) and the model's ability to overfit.

    python -m pytest tests/test_gpt.py -q
"""
import math

import pytest
import torch
import torch.nn.functional as F

from nanochat.gpt import (GPTConfig, ReLUSquared, RMSNorm, build_model, apply_rotary, decode_attention, norm,
                          rotary_factors, rotary_tables)
from nanochat.head_loss import tanh_via_sigmoid

torch.set_num_threads(1)


def tiny(n_kv_head=2, **kw):
    cfg = dict(sequence_len=32, vocab_size=64, n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=64)
    cfg.update(kw)
    return GPTConfig(**cfg)


def randomize(model, seed=0):
    """init_weights zeroes the output projections; give every weight random values so tests see signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


# -----------------------------------------------------------------------------
# a naive model forward: explicit loops over heads, explicit mask, repeat for GQA


def naive_forward(model, idx):
    c = model.config
    B, T = idx.shape
    H, Hkv, D = c.n_head, c.n_kv_head, c.head_dim
    x = norm(model.transformer.wte.weight[idx])
    pos = torch.arange(T, dtype=torch.float64)
    inv = 1.0 / (c.rope_base ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    ang = pos[:, None] * inv[None, :]  # (T, D/2)
    cos, sin = ang.cos().float(), ang.sin().float()

    def rope(t):  # t: (B, T, h, D); adjacent pairs (t[2i], t[2i+1]) rotated by -pos * inv[i]
        a, b = t[..., 0::2], t[..., 1::2]
        cs, sn = cos[None, :, None, :], sin[None, :, None, :]
        return torch.stack([a * cs + b * sn, b * cs - a * sn], dim=-1).flatten(-2)

    for blk in model.transformer.h:
        h = norm(x)
        q = (h @ blk.attn.c_q.weight.T).view(B, T, H, D)
        k = (h @ blk.attn.c_k.weight.T).view(B, T, Hkv, D)
        v = (h @ blk.attn.c_v.weight.T).view(B, T, Hkv, D)
        q, k = norm(rope(q)), norm(rope(k))
        out = torch.zeros(B, T, H, D)
        for head in range(H):
            kv = head // (H // Hkv)  # query head -> its key/value group
            s = q[:, :, head] @ k[:, :, kv].transpose(1, 2) / math.sqrt(D)  # (B, T, T)
            s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
            out[:, :, head] = s.softmax(-1) @ v[:, :, kv]
        x = x + out.reshape(B, T, H * D) @ blk.attn.c_proj.weight.T
        h = norm(x)
        x = x + torch.relu(h @ blk.mlp.c_fc.weight.T).square() @ blk.mlp.c_proj.weight.T
    logits = norm(x) @ model.lm_head.weight.T
    return c.softcap * torch.tanh(logits / c.softcap)


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_forward_matches_naive(n_kv_head):
    torch.manual_seed(0)
    model = randomize(build_model(tiny(n_kv_head), "cpu", torch.float32))
    idx = torch.randint(0, 64, (2, 12))
    torch.testing.assert_close(model(idx), naive_forward(model, idx), atol=2e-5, rtol=2e-5)


def test_inference_logits_match_naive():
    # without gradients the softcap runs in place (tanh_via_sigmoid): same logits as the naive tanh
    model = randomize(build_model(tiny(2), "cpu", torch.float32))
    idx = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), naive_forward(model, idx), atol=2e-5, rtol=2e-5)


def test_tanh_via_sigmoid_is_tanh_in_both_modes():
    z = torch.linspace(-30, 30, 10001, dtype=torch.float64)
    torch.testing.assert_close(tanh_via_sigmoid(z.clone(), inplace=True), torch.tanh(z), atol=1e-15, rtol=0)
    z32 = z.float()
    torch.testing.assert_close(tanh_via_sigmoid(z32.clone(), inplace=True), torch.tanh(z32), atol=3e-7, rtol=0)
    assert torch.equal(tanh_via_sigmoid(z32), tanh_via_sigmoid(z32.clone(), inplace=True))


def test_logits_with_and_without_gradients_are_bitwise_equal():
    # a frozen reference (no_grad) and its policy copy (with grad) must give the very same log-probs
    model = randomize(build_model(tiny(2), "cpu", torch.float32))
    idx = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(2))
    with_grad = model(idx)
    assert with_grad.requires_grad
    with torch.no_grad():
        assert torch.equal(model(idx), with_grad.detach())


def test_relu_squared_forward_and_hand_written_backward():
    x = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    x.data[0, 0, :3] = torch.tensor([0.0, -0.0, 1e-300], dtype=torch.float64)  # edges of the kink
    torch.testing.assert_close(ReLUSquared.apply(x), torch.relu(x).square())
    assert torch.autograd.gradcheck(ReLUSquared.apply, (x,))
    g = torch.randn_like(x)
    (ours,) = torch.autograd.grad(ReLUSquared.apply(x), x, g)
    (ref,) = torch.autograd.grad(torch.relu(x).square(), x, g)
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)


def test_rms_norm_forward_and_hand_written_backward():
    x = torch.randn(3, 5, 2, 8, dtype=torch.float64, requires_grad=True)
    ref = F.rms_norm(x, (8,))
    torch.testing.assert_close(RMSNorm.apply(x), ref, atol=1e-15, rtol=0)
    assert torch.autograd.gradcheck(RMSNorm.apply, (x,))
    g = torch.randn_like(x)
    (ours,) = torch.autograd.grad(RMSNorm.apply(x), x, g)
    (want,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(ours, want, atol=1e-14, rtol=0)
    # fp32: with and without gradients the very same numbers (norm() takes the no-grad path under no_grad)
    x32 = torch.randn(4, 16, 256)
    with torch.no_grad():
        plain = norm(x32)
    assert torch.equal(norm(x32.clone().requires_grad_()), plain)
    torch.testing.assert_close(plain, F.rms_norm(x32, (256,)), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("H, Hkv", [(4, 4), (4, 2), (4, 1)])
def test_decode_attention_matches_sdpa(H, Hkv):
    g = torch.Generator().manual_seed(0)
    B, T, D = 3, 37, 16
    q = torch.randn(B, H, 1, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, Hkv, T, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, Hkv, T, D, generator=g, dtype=torch.float64)
    ref = F.scaled_dot_product_attention(q, k, v, enable_gqa=H != Hkv)
    torch.testing.assert_close(decode_attention(q, k, v), ref, atol=1e-12, rtol=1e-12)
    # a strided view of a larger cache buffer, as the KV cache hands it over
    buf = torch.randn(2, B, Hkv, T + 20, D, generator=g, dtype=torch.float64)
    kk, vv = buf[0, :, :, :T], buf[1, :, :, :T]
    ref = F.scaled_dot_product_attention(q, kk, vv, enable_gqa=H != Hkv)
    torch.testing.assert_close(decode_attention(q, kk, vv), ref, atol=1e-12, rtol=1e-12)
    # bf16 in, bf16 out (scores and softmax in fp32), within bf16 rounding of the exact answer
    out = decode_attention(q.bfloat16(), kk.bfloat16(), vv.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, atol=3e-2, rtol=3e-2)


def test_loss_matches_cross_entropy_and_ignore_index():
    model = randomize(build_model(tiny(), "cpu", torch.float32))
    idx = torch.randint(0, 64, (2, 10))
    tgt = torch.randint(0, 64, (2, 10))
    tgt[0, :3] = -1
    logits = model(idx)
    ref = F.cross_entropy(logits.view(-1, 64), tgt.view(-1), ignore_index=-1)
    torch.testing.assert_close(model(idx, tgt), ref)
    per_tok = model(idx, tgt, loss_reduction="none")
    assert per_tok.shape == (2, 10)
    assert torch.all(per_tok[0, :3] == 0)
    torch.testing.assert_close(per_tok.sum() / 17, ref)


def test_init_is_explicit_and_starts_uniform():
    model = build_model(tiny(), "cpu", torch.float32)
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    for blk in model.transformer.h:
        assert torch.all(blk.attn.c_proj.weight == 0) and torch.all(blk.mlp.c_proj.weight == 0)
    assert torch.all(model.lm_head.weight == 0)
    assert abs(model.transformer.wte.weight.std().item() - 1.0) < 0.1
    s = 3**0.5 * 64**-0.5
    w = model.transformer.h[0].attn.c_q.weight
    assert w.abs().max() <= s and w.abs().max() > 0.9 * s
    # zero lm_head => uniform predictions => loss is exactly ln(V)
    idx = torch.randint(0, 64, (2, 8))
    assert abs(model(idx, idx).item() - math.log(64)) < 1e-5
    # no biases, nothing but 2-D block matrices
    assert all(p.ndim == 2 for p in model.parameters())


def test_bf16_compute_policy_keeps_fp32_weights_and_logits():
    torch.manual_seed(0)
    model = randomize(build_model(tiny(), "cpu", torch.bfloat16))
    assert model.compute_dtype == torch.bfloat16 and model.cos.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    idx = torch.randint(0, 64, (2, 8))
    logits = model(idx)
    assert logits.dtype == torch.float32
    ref = naive_forward(model, idx)
    assert (logits - ref).abs().max() < 0.25 * ref.abs().max()  # close, but at bf16 precision


# -----------------------------------------------------------------------------
# estimate_flops against a hand count


def test_estimate_flops_hand_count():
    c = GPTConfig(sequence_len=32, vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)
    model = build_model(c, "cpu")
    C, hd = 64, 16
    # per layer: q (C*C), k and v (C * 2 heads*16 = C*32 each), proj (C*C), fc (C*4C), mlp proj (4C*C)
    per_layer = C * C + 2 * C * 32 + C * C + 2 * 4 * C * C
    lm_head = C * 64
    matmul_params = 2 * per_layer + lm_head  # 2 layers; the embedding is a lookup and does not count
    attention = 2 * 12 * 4 * hd * 32  # n_layer * 12 * n_head * head_dim * T
    assert model.estimate_flops() == 6 * matmul_params + attention == 6 * 94208 + 49152  # = 614400
    assert model.num_params() == matmul_params + 64 * C


# -----------------------------------------------------------------------------
# KV cache: a reference cache written from the contract, and the engine's own when it exists


class ContractCache:
    """Minimal KV cache per the shared contract: insert_kv returns full views; advances after the last layer."""

    def __init__(self, B, Hkv, T, D, L):
        self.k = torch.zeros(L, B, Hkv, T, D)
        self.v = torch.zeros(L, B, Hkv, T, D)
        self.pos, self.L = 0, L

    def get_pos(self):
        return self.pos

    def insert_kv(self, layer, k, v):
        t0, t1 = self.pos, self.pos + k.size(2)
        self.k[layer, :, :, t0:t1] = k
        self.v[layer, :, :, t0:t1] = v
        if layer == self.L - 1:
            self.pos = t1
        return self.k[layer, :, :, :t1], self.v[layer, :, :, :t1]


def check_cached_forward(model, make_cache):
    idx = torch.randint(0, 64, (2, 20))
    full = model(idx)
    cache = make_cache()
    pieces = [model(idx[:, :8], kv_cache=cache)]  # prefill into an empty cache (causal)
    pieces.append(model(idx[:, 8:13], kv_cache=cache))  # a chunk after a prefix
    for t in range(13, 20):  # single tokens
        pieces.append(model(idx[:, t:t + 1], kv_cache=cache))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=2e-5, rtol=2e-5)
    assert cache.get_pos() == 20


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_kv_cache_matches_full_forward_contract(n_kv_head):
    torch.manual_seed(1)
    model = randomize(build_model(tiny(n_kv_head), "cpu", torch.float32))
    c = model.config
    check_cached_forward(model, lambda: ContractCache(2, c.n_kv_head, 32, c.head_dim, c.n_layer))


def test_kv_cache_matches_full_forward_engine():
    engine = pytest.importorskip("nanochat.engine")
    torch.manual_seed(2)
    model = randomize(build_model(tiny(2), "cpu", torch.float32))
    c = model.config
    check_cached_forward(model, lambda: engine.KVCache(batch_size=2, num_heads=c.n_kv_head, seq_len=32,
                                                        head_dim=c.head_dim, num_layers=c.n_layer,
                                                        device="cpu", dtype=torch.float32))


# -----------------------------------------------------------------------------
# the GPU code path, run on CPU: what a GPU would execute (plain torch ops, torch.compile), minus the device


def loss_and_grads(model, idx, targets):
    model.zero_grad(set_to_none=True)
    loss = model(idx, targets)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_gpu_code_path_matches_cpu_path_and_compiles_fullgraph(monkeypatch):
    # CI has no GPU, so the branches that only GPUs take (F.rms_norm under autograd, the real rotary form,
    # F.linear, the unchunked softcapped head + F.cross_entropy, SDPA for decode steps) would otherwise never
    # run before a user's first GPU step. gpt.cpu_kernels decides between the paths; switched off here, the
    # same model must give the CPU path's numbers, its KV-cache decode must match the full forward, and
    # torch.compile(fullgraph=True), as base_train uses it on CUDA, must trace it without a graph break
    # (aot_eager: dynamo + AOT autograd, the parts shared with the GPU backend; no C++ compiler needed).
    from nanochat import gpt as gpt_module
    torch.manual_seed(0)
    model = randomize(build_model(tiny(2), "cpu", torch.float32), seed=3)
    idx = torch.randint(0, 64, (2, 16))
    targets = torch.randint(0, 64, (2, 16))
    targets[0, :3] = -1  # ignored positions take the same route on both paths
    cpu_loss, cpu_grads = loss_and_grads(model, idx, targets)
    cpu_logits = model(idx)
    monkeypatch.setattr(gpt_module, "cpu_kernels", lambda t: False)
    gpu_loss, gpu_grads = loss_and_grads(model, idx, targets)
    torch.testing.assert_close(gpu_loss, cpu_loss, rtol=1e-5, atol=1e-6)
    for g_gpu, g_cpu in zip(gpu_grads, cpu_grads):
        torch.testing.assert_close(g_gpu, g_cpu, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model(idx), cpu_logits, rtol=1e-5, atol=1e-5)
    engine = pytest.importorskip("nanochat.engine")
    c = model.config
    check_cached_forward(model, lambda: engine.KVCache(2, c.n_kv_head, 32, c.head_dim, c.n_layer))
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=False)
    comp_loss, comp_grads = loss_and_grads(compiled, idx, targets)
    torch.testing.assert_close(comp_loss, gpu_loss, rtol=1e-5, atol=1e-6)
    for g_comp, g_gpu in zip(comp_grads, gpu_grads):
        torch.testing.assert_close(g_comp, g_gpu, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # evaluation and sampling: logits, and per-token losses (bpb)
        torch.testing.assert_close(compiled(idx), cpu_logits, rtol=1e-5, atol=1e-5)
        per_token = compiled(idx, targets, loss_reduction="none")
    assert per_token.shape == (2, 16) and (per_token[0, :3] == 0).all()
    torch.testing.assert_close(per_token.sum() / (targets != -1).sum(), cpu_loss, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


def test_gpu_code_path_compiles_in_bf16(monkeypatch):
    # the GPU precision policy (bf16 activations, fp32 weights) through the compiled GPU path: same loss as eager
    from nanochat import gpt as gpt_module
    monkeypatch.setattr(gpt_module, "cpu_kernels", lambda t: False)
    torch.manual_seed(0)
    model = randomize(build_model(tiny(2), "cpu", torch.bfloat16), seed=4)
    idx, targets = torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16))
    eager_loss, eager_grads = loss_and_grads(model, idx, targets)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=False)
    comp_loss, comp_grads = loss_and_grads(compiled, idx, targets)
    torch._dynamo.reset()
    assert comp_loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in comp_grads)
    torch.testing.assert_close(comp_loss, eager_loss, rtol=2e-2, atol=2e-2)
    for g_comp, g_eager in zip(comp_grads, eager_grads):
        assert (g_comp - g_eager).abs().max() <= 0.05 * g_eager.abs().max() + 1e-6


# -----------------------------------------------------------------------------
# learning


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = build_model(tiny(), "cpu", torch.float32)
    from nanochat.optim import setup_optimizer
    opt = setup_optimizer(model, embedding_lr=0.3, unembedding_lr=0.02, matrix_lr=0.05)
    idx = torch.randint(0, 64, (2, 17))
    x, y = idx[:, :-1], idx[:, 1:]
    first = model(x, y).item()
    for _ in range(150):
        loss = model(x, y)
        loss.backward()
        opt.step()
        model.zero_grad(set_to_none=True)
    assert first > 4.0
    assert model(x, y).item() < 0.05


def test_rotary_preserves_norm_and_relative_positions():
    D = 16
    cos, sin = [t[0, :, 0] for t in rotary_tables(10, D, 10000.0, "cpu", torch.float32)]
    q, k = torch.randn(D), torch.randn(D)
    rot = lambda x, t: apply_rotary(x.view(1, 1, 1, D), rotary_factors(cos[t].view(1, 1, 1, -1), sin[t].view(1, 1, 1, -1))).view(D)
    torch.testing.assert_close(rot(q, 7).norm(), q.norm())
    # the score depends only on the offset between positions
    torch.testing.assert_close(rot(q, 5) @ rot(k, 2), rot(q, 8) @ rot(k, 5), atol=1e-5, rtol=1e-5)


def test_rotary_complex_and_real_forms_agree():
    # CPU fp32/fp64 rotates with one complex product; GPUs (and bf16) with the real form: the same function
    cos, sin = rotary_tables(12, 8, 10000.0, "cpu", torch.float64)
    rope = rotary_factors(cos, sin)
    assert rope.is_complex()
    x = torch.randn(2, 12, 3, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(x)
    fast, real = apply_rotary(x, rope), apply_rotary(x, (cos, sin))
    torch.testing.assert_close(fast, real, atol=1e-15, rtol=0)
    (gf,) = torch.autograd.grad(fast, x, g)
    (gr,) = torch.autograd.grad(real, x, g)
    torch.testing.assert_close(gf, gr, atol=1e-15, rtol=0)
    # pair i of position t is turned by -t * theta_i: check one pair by hand
    theta = 10000.0 ** (-2 / 8)  # i = 1
    a, b = x[1, 5, 2, 2].item(), x[1, 5, 2, 3].item()
    want = [a * math.cos(5 * theta) + b * math.sin(5 * theta), b * math.cos(5 * theta) - a * math.sin(5 * theta)]
    torch.testing.assert_close(fast[1, 5, 2, 2:4], torch.tensor(want, dtype=torch.float64))
    bf = rotary_factors(cos.to(torch.bfloat16), sin.to(torch.bfloat16))
    assert isinstance(bf, tuple)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="n_kv_head"):
        GPTConfig(n_head=6, n_kv_head=4, n_embd=768)
    model = build_model(tiny(), "cpu")
    with pytest.raises(ValueError, match="rotary"):
        model(torch.zeros(1, 321, dtype=torch.long))
