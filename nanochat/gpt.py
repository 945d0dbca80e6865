"""
The GPT model: a decoder-only Transformer, nanochat flavour.

Differences from the GPT-2 of nanoGPT, each a known improvement:
- rotary position embeddings (RoFormer, arXiv 2104.09864) instead of a learned positional table
- QK-norm: RMSNorm on queries and keys before attention (arXiv 2010.04245, 2302.05442) keeps logits tame
- parameter-free RMSNorm (arXiv 1910.07467), pre-norm, plus one after the embedding and one before the head
- ReLU^2 MLP (Primer, arXiv 2109.08668)
- grouped-query attention, n_kv_head <= n_head (GQA, arXiv 2305.13245) for a smaller KV cache
- logit soft-capping with tanh (Gemma 2, arXiv 2408.00118)
- untied token embedding and lm_head, no biases anywhere, zero-initialized output projections and lm_head

Precision policy (one place, explicit): weights live in fp32 (the optimizer wants them); activations run in
the "compute dtype" chosen once by nanochat.common.compute_dtype (bf16 on CUDA SM80+, fp32 on CPU). The
embedding output is cast to it, each Linear casts its weight to the input's dtype, and the logits come back
in fp32. There is no autocast anywhere.

The model is built on the meta device (no memory, no wasted init) and then materialized and initialized:

    with torch.device("meta"):
        model = GPT(GPTConfig(...))
    model.to_empty(device=device)
    model.init_weights()

This file knows nothing about distributed training, data or the command line.
"""
import contextlib
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanochat import cpu_linear
from nanochat.common import compute_dtype
from nanochat.head_loss import softcapped_cross_entropy, tanh_via_sigmoid

# -----------------------------------------------------------------------------
# config


@dataclass
class GPTConfig:
    sequence_len: int = 1024  # the longest context we train on; rotary tables are precomputed well past it
    vocab_size: int = 65536
    n_layer: int = 12
    n_head: int = 6  # query heads
    n_kv_head: int = 6  # key/value heads (GQA when < n_head)
    n_embd: int = 768
    softcap: float = 15.0  # logits = softcap * tanh(logits / softcap)
    rope_base: float = 10000.0

    def __post_init__(self):
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.n_kv_head > self.n_head or self.n_head % self.n_kv_head != 0:
            raise ValueError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head}")
        if (self.n_embd // self.n_head) % 2 != 0:
            raise ValueError(f"head_dim={self.n_embd // self.n_head} must be even for rotary embeddings")

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    def to_dict(self):
        return asdict(self)


# -----------------------------------------------------------------------------
# building blocks


def cpu_kernels(t):
    """
    Whether the model takes its hand-written CPU paths for tensor t (true on CPU): the RMSNorm and loss-head
    Functions, oneDNN/packed products, complex rotary, matrix-vector decode attention. Elsewhere it runs plain
    torch ops, which torch.compile fuses on GPUs. One predicate, so that tests can run the GPU code path on CPU
    (tests/test_gpt.py compiles it with fullgraph=True: a graph break there would first show on a GPU).
    """
    return t.device.type == "cpu"


def rms_inverse(x):
    """1 / rms(x) over the last dim, (..., 1); rms = sqrt(mean(x^2) + eps), eps the dtype's epsilon as in F.rms_norm."""
    mean_square = torch.linalg.vecdot(x, x).div_(x.size(-1)).add_(torch.finfo(x.dtype).eps)  # (...,): one pass
    return mean_square.rsqrt_().unsqueeze(-1)


class RMSNorm(torch.autograd.Function):
    """
    Parameter-free RMSNorm with a hand-written backward. torch's CPU rms_norm is a chain of generic ops
    (pow, mean, add, rsqrt, mul) that autograd differentiates one by one, ~10 passes over the tensor in the
    backward alone. With y = x * r, r = 1 / rms(x), the gradient is r * (g - y * mean(g * y)): one reduction,
    one fused multiply-add, one scaling. Forward+backward of a (8, 256, 256) tensor here: ~1.2 -> ~0.5 ms.
    The forward output is F.rms_norm's own, so it is bitwise what inference (no Function) computes.
    """

    @staticmethod
    def forward(ctx, x):
        y = F.rms_norm(x, (x.size(-1),))
        ctx.save_for_backward(y, rms_inverse(x))  # a second reduction over x (F.rms_norm keeps its r to itself)
        return y

    @staticmethod
    def backward(ctx, g):
        y, rstd = ctx.saved_tensors
        mean_gy = torch.linalg.vecdot(g, y).div_(-y.size(-1)).unsqueeze(-1)  # (..., 1): -mean(g * y)
        return torch.addcmul(g, y, mean_gy).mul_(rstd)


def norm(x):
    """
    Parameter-free RMSNorm over the last dimension (arXiv 1910.07467): F.rms_norm, with the hand-written
    backward above on CPU (on GPUs torch.compile fuses F.rms_norm and its backward into a kernel each).
    """
    if cpu_kernels(x) and torch.is_grad_enabled() and x.requires_grad:
        return RMSNorm.apply(x)
    return F.rms_norm(x, (x.size(-1),))


class Linear(nn.Linear):
    """A bias-free Linear whose fp32 weight is cast to the activation dtype: the whole precision policy."""

    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features, bias=False)
        self.packed = None  # (weight version, oneDNN-packed weight) while packed_weights is active, on CPU
        self.packed_users = 0

    def forward(self, x):
        w = self.weight
        w = w if w.dtype == x.dtype else w.to(x.dtype)  # (checked here: even a no-op .to costs a dispatch)
        if cpu_kernels(x):
            # the packed copy only while the weight is unchanged since packing (its version counter says so)
            packed = self.packed[1] if self.packed is not None and self.packed[0] == self.weight._version else None
            return cpu_linear.linear(x, w, packed)  # the fastest CPU kernel for the shape: see cpu_linear
        return F.linear(x, w)


@contextlib.contextmanager
def packed_weights(model, rows=cpu_linear.PACKED_ROWS):
    """
    Inside the block, every Linear of `model` (any module holding our Linears) that lives on CPU in fp32 keeps
    a oneDNN-packed copy of its weight, so that batched decode steps (4-16 rows) skip the weight reorder in
    every product (nanochat/cpu_linear.py). For generation: the copy is made on entry (one pass over the
    weights: 9-27 ms at d4, what 8-12 decode steps at batch 16 save) and dropped on exit. `rows`: the batch
    the caller will decode; below cpu_linear.PACKED_MIN_ROWS nothing is packed. A weight changed in place
    inside the block stops using its stale copy. Nested or concurrent blocks share the copies. No-op on GPUs.
    """
    if rows < cpu_linear.PACKED_MIN_ROWS:
        yield
        return
    linears = [m for m in model.modules() if isinstance(m, Linear) and m.weight.device.type == "cpu"]
    for m in linears:
        if m.packed_users == 0:
            packed = cpu_linear.pack_weight(m.weight)
            m.packed = None if packed is None else (m.weight._version, packed)
        m.packed_users += 1
    try:
        yield
    finally:
        for m in linears:
            m.packed_users -= 1
            if m.packed_users == 0:
                m.packed = None


def rotary_factors(cos, sin):
    """
    What apply_rotary multiplies by, made once per forward pass from the (1, T, 1, D/2) tables. On CPU in
    fp32/fp64: the complex numbers cos - i sin, so that rotating a pair is one complex product (forward+backward
    of a (8, 256, 2, 128) query ~5x faster here than the real form: one op instead of six, and no slicing whose
    backward fills zeros). Elsewhere: the (cos, sin) pair, because there is no complex bf16 and torch.compile
    fuses the real form into one kernel on GPUs anyway.
    """
    if cpu_kernels(cos) and cos.dtype in (torch.float32, torch.float64):
        return torch.complex(cos, -sin)
    return cos, sin


def apply_rotary(x, rope):
    """
    Rotate each adjacent pair (x[2i], x[2i+1]) of the head dim by the angle -t * theta_i (RoFormer,
    arXiv 2104.09864, which pairs adjacent dims; the sign is a convention). x: (B, T, H, D) -> (B, T, H, D).
    rope: from rotary_factors, complex (1, T, 1, D/2) or a (cos, sin) pair of that shape.
    """
    pairs = x.unflatten(-1, (-1, 2))  # (B, T, H, D/2, 2)
    if torch.is_tensor(rope):  # (x1 + i x2)(cos - i sin) = (x1 cos + x2 sin) + i (x2 cos - x1 sin)
        return torch.view_as_real(torch.view_as_complex(pairs) * rope).flatten(-2)
    cos, sin = rope
    x1, x2 = pairs.unbind(-1)
    return torch.stack([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1).flatten(-2)


def rotary_tables(seq_len, head_dim, base, device, dtype):
    """cos and sin tables of shape (1, seq_len, 1, head_dim/2)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    t = torch.arange(seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)  # (T, D/2)
    cos, sin = freqs.cos().to(dtype), freqs.sin().to(dtype)
    return cos[None, :, None, :], sin[None, :, None, :]


def decode_attention(q, k, v):
    """
    Attention of one new token per row to all cached keys: q (B, H, 1, D), k and v (B, H_kv, T, D) -> (B, H, 1, D).

    A decode step reads the whole KV cache once for a handful of query values, so it is bound by memory
    traffic, not FLOPs. Written as two batched matrix-vector products, K @ q streams each key row once and
    p^T @ V each value row once; on CPU this runs ~1.7x faster at batch 16 than scaled_dot_product_attention,
    whose blocked kernel is built for many queries (used on CPU only; measured with scripts/infer_bench.py
    and a 4-layer microbenchmark: 1.66 -> 0.98 ms). GQA needs no copy of the cache: the G = H / H_kv query
    heads that share a key/value head become the G columns of one product (query head h uses kv head h // G,
    as enable_gqa does).
    With one query head per kv head (G = 1), the second product is a weighted sum of V's rows, and torch's
    batched (1, T) @ (T, D) streams V poorly once the cache outgrows the CPU caches; linalg.vecdot over the T
    dim reads it once: 4 layers at batch 16, 320 positions: 1.28 -> 0.79 ms, level at small sizes.
    """
    B, H, _, D = q.shape
    Hkv = k.size(1)
    qg = q.view(B, Hkv, H // Hkv, D)  # (B, Hkv, G, D)
    scores = torch.matmul(k, qg.mT).mul_(D**-0.5)  # (B, Hkv, T, G)
    acc = torch.float32 if scores.dtype in (torch.bfloat16, torch.float16) else scores.dtype  # fp32 at least
    probs = torch.softmax(scores, dim=-2, dtype=acc)  # over the T keys
    probs = probs if probs.dtype == v.dtype else probs.to(v.dtype)
    if H == Hkv:  # sum over t of probs[t] * v[t]: (B, Hkv, T, 1) with (B, Hkv, T, D) -> (B, Hkv, D)
        y = torch.linalg.vecdot(probs, v, dim=-2)
    else:
        y = torch.matmul(probs.mT, v)  # (B, Hkv, G, D)
    return y.view(B, H, 1, D)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.c_q = Linear(config.n_embd, self.n_head * self.head_dim)
        self.c_k = Linear(config.n_embd, self.n_kv_head * self.head_dim)
        self.c_v = Linear(config.n_embd, self.n_kv_head * self.head_dim)
        self.c_proj = Linear(self.n_head * self.head_dim, config.n_embd)

    def forward(self, x, rope, kv_cache=None):
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)  # (B, T, H, D)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, Hkv, D)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k = apply_rotary(q, rope), apply_rotary(k, rope)
        q, k = norm(q), norm(k)  # QK-norm (rotation preserves the norm, so the order does not matter)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)  # (B, Hkv, T_cache, D): all keys so far
        Tq, Tk = q.size(2), k.size(2)
        gqa = self.n_kv_head != self.n_head
        if Tq == Tk:  # training, or a prefill into an empty cache: plain causal attention
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        elif Tq == 1 and cpu_kernels(q):  # one new token attends to everything in the cache
            y = decode_attention(q, k, v)
        elif Tq == 1:  # on GPUs the fused kernel, which also keeps the scores in fp32 under bf16
            y = F.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=gqa)
        else:  # a chunk after a prefix: the prefix is fully visible, causal within the chunk
            prefix = Tk - Tq
            mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device)
            mask[:, prefix:] = torch.tril(mask[:, prefix:])
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)  # (B, T, C)
        return self.c_proj(y)


class ReLUSquared(torch.autograd.Function):
    """
    relu(x)^2 (Primer, arXiv 2109.08668) with a hand-written backward: d/dx relu(x)^2 = 2 relu(x), so the one
    saved tensor relu(x) gives the gradient in a single product. Autograd of F.relu(x).square() instead makes
    four (B, T, 4C) temporaries in the backward pass (pow, two products, the relu mask), each a fresh tensor
    written out to memory and read back, which at this size costs far more than the arithmetic: on CPU this
    saved ~11% of a d4 forward+backward (interleaved A/B, best of 6 rounds: 636 -> 563 ms).
    """

    @staticmethod
    def forward(ctx, x):
        r = F.relu(x)
        ctx.save_for_backward(r)
        return r.square()

    @staticmethod
    def backward(ctx, grad):
        (r,) = ctx.saved_tensors
        return grad.mul(r).mul_(2)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        h = self.c_fc(x)  # (B, T, 4C)
        # the Function only where a backward will follow; at inference the same two ops without its overhead
        h = ReLUSquared.apply(h) if torch.is_grad_enabled() and h.requires_grad else F.relu(h).square()
        return self.c_proj(h)


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x, rope, kv_cache=None):
        x = x + self.attn(norm(x), rope, kv_cache)
        x = x + self.mlp(norm(x))
        return x


# -----------------------------------------------------------------------------
# the model


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
        ))
        self.lm_head = Linear(config.n_embd, config.vocab_size)  # untied from wte
        # rotary tables: non-persistent buffers (recomputed, never saved), 10x the training length so that
        # generation can run past it; filled in init_weights because meta tensors hold no values
        self.rotary_len = config.sequence_len * 10
        cos, sin = rotary_tables(self.rotary_len, config.head_dim, config.rope_base, "meta", torch.float32)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self, dtype=None):
        """
        Fill every parameter (and the rotary tables) in place. `dtype` is the compute dtype for activations;
        default: the project policy for this device (nanochat.common.compute_dtype).
        """
        device = self.transformer.wte.weight.device
        dtype = dtype or compute_dtype(device.type)
        nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=1.0)  # RMSNorm follows: scale is free
        # uniform with the std of 1/sqrt(fan_in): bounded, no outliers
        s = 3**0.5 * self.config.n_embd**-0.5
        for block in self.transformer.h:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -s, s)
            # zero output projections: every block starts as the identity on the residual stream
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
        nn.init.zeros_(self.lm_head.weight)  # uniform predictions at step 0 (loss = ln V)
        cos, sin = rotary_tables(self.rotary_len, self.config.head_dim, self.config.rope_base, device, dtype)
        self.cos, self.sin = cos, sin

    @property
    def compute_dtype(self):
        return self.cos.dtype

    def get_device(self):
        return self.transformer.wte.weight.device

    def param_groups(self):
        """The parameters by role, for the optimizer: Muon for block matrices, AdamW for the rest."""
        return dict(
            matrix=list(self.transformer.h.parameters()),
            embedding=[self.transformer.wte.weight],
            lm_head=[self.lm_head.weight],
        )

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def estimate_flops(self):
        """
        Training FLOPs per token (forward + backward).

        Every weight of a matmul costs 2 FLOPs per token forward (a multiply and an add) and 4 backward
        (gradients w.r.t. input and weight), hence 6*N for the N matmul parameters (Kaplan et al.,
        arXiv 2001.08361, sec. 2.1; Chinchilla, arXiv 2203.15556, app. F). The embedding is a lookup, not a
        matmul, so it is excluded; lm_head is a matmul and counts. Attention adds, per layer and token,
        QK^T and AV: 2 * 2 * T * (n_head*head_dim) forward, x3 with backward = 12 * n_head * head_dim * T
        (PaLM, arXiv 2204.02311, app. B, which counts the full T x T score matrix, causal masking ignored).
        """
        n_matmul = self.num_params() - self.transformer.wte.weight.numel()
        c = self.config
        return 6 * n_matmul + 12 * c.n_layer * c.n_head * c.head_dim * c.sequence_len

    def forward(self, idx, targets=None, kv_cache=None, loss_reduction="mean"):
        """
        idx: (B, T) token ids. Returns logits (B, T, V) in fp32 when targets is None, else the cross-entropy
        loss (targets -1 are ignored; loss_reduction "mean", "sum" or "none" -> (B, T)).
        """
        B, T = idx.size()
        T0 = kv_cache.get_pos() if kv_cache is not None else 0  # rotary offset of the first new token
        if T0 + T > self.rotary_len:
            raise ValueError(f"sequence of {T0 + T} tokens is longer than the rotary table ({self.rotary_len})")
        rope = rotary_factors(self.cos[:, T0:T0 + T], self.sin[:, T0:T0 + T])  # from (1, T, 1, D/2) tables
        x = self.transformer.wte(idx).to(self.compute_dtype)  # (B, T, C)
        x = norm(x)
        for block in self.transformer.h:
            x = block(x, rope, kv_cache)
        # soft-capping: softcap * tanh(logits / softcap); dividing x (B, T, C) instead of the logits (B, T, V)
        # gives the same logits / softcap with one pass over C, not V, elements
        x = norm(x) / self.config.softcap
        # CPU: head, softcap and loss in one chunked pass that never holds (B, T, V) (nanochat/head_loss.py);
        # per-token losses only without gradients (with them, the full (B, T, V) gradient would have to be kept)
        chunked = cpu_kernels(x) and (loss_reduction != "none" or not torch.is_grad_enabled())
        if targets is not None and chunked:
            loss = softcapped_cross_entropy(x.view(B * T, -1), self.lm_head.weight.to(x.dtype), targets.reshape(-1),
                                            self.config.softcap, loss_reduction)
            return loss.view(B, T) if loss_reduction == "none" else loss
        logits = self.lm_head(x).float()  # (B, T, V), fp32 for a stable softmax
        # softcap * tanh, with the tanh that is fast on CPU; in place when no gradient is needed (inference)
        logits = tanh_via_sigmoid(logits, inplace=not torch.is_grad_enabled()).mul_(self.config.softcap)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=loss_reduction)
        return loss.view(B, T) if loss_reduction == "none" else loss  # "none": (B, T), 0 where ignored

    @torch.no_grad()
    def generate(self, tokens, max_tokens, temperature=0.0, seed=42):
        """
        The simplest sampler (no KV cache, one row): yields new token ids. For samples during training; the
        engine (nanochat/engine.py) is the fast one with a cache, batching and tools.
        """
        ids = torch.tensor([tokens], dtype=torch.long, device=self.get_device())  # (1, T)
        g = torch.Generator(device=ids.device).manual_seed(seed)
        for _ in range(max_tokens):
            logits = self(ids[:, -self.rotary_len:])[:, -1, :]  # (1, V)
            if temperature > 0:
                nxt = torch.multinomial(F.softmax(logits / temperature, dim=-1), 1, generator=g)
            else:
                nxt = logits.argmax(dim=-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
            yield nxt.item()


def build_model(config, device, dtype=None):
    """GPT on the meta device, materialized on `device` and initialized: the one way to make a fresh model."""
    with torch.device("meta"):
        model = GPT(config)
    model.to_empty(device=device)
    model.init_weights(dtype)
    return model
