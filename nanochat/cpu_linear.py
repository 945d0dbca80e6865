"""
x @ w^T on CPU, by the kernel that is fastest for the shape. GPU code never comes here.

Three kernels, measured on the 2-core AMD EPYC (Zen 4) box that runs our CI, fp32, 2 threads:

- Up to 16 rows (a decode step: one new token per sequence). The weights are cold in memory and the product
  is bound by reading them once. MKL's kernels for x @ w^T with few rows read them several times slower than
  memory allows (an (8192, 256) weight: 1.1 ms for 1 row, 1.6-2.6 ms for 2-16 rows, while merely summing it
  takes 0.25 ms); the same product the other way round, (w @ x^T)^T, takes 0.36 ms for 2 rows.
  -> few_rows_linear.

- A multiple of 64 rows (every training step: B*T rows; the loss head's 256-row chunks). torch.mm calls MKL's
  sgemm, which runs its AVX2 code on AMD CPUs; oneDNN's matmul (torch.ops.mkldnn._linear_pointwise, the op
  that torch.compile's CPU backend emits for linear layers) runs AVX-512 code. GFLOP/s, torch.mm vs oneDNN,
  for the products of a d4 training step: x @ w^T (2048, 256) x (256, 1024): 177 vs 207; loss-head chunk
  (256, 256) x (256, 8192): 132 vs 181; the input gradient g @ w (2048, 1024) x (1024, 256), as
  linear(g, w^T): 186 vs 216. The weight gradient g^T @ x stays with torch.mm, which was faster for it
  (195 vs 154 at (256, 2048) x (2048, 256)).
  -> the autograd Function OneDNNLinear (and the same kernel without gradients).
  But oneDNN builds a kernel for each new shape it meets, ~0.7 ms each here. Training repeats its shapes;
  ragged inference (prompts of every length, RL rollouts, chat) would meet new ones all the time: sampling
  8 rows from prompts of random lengths with a d2 model ran ~20% slower with oneDNN for every shape. Row
  counts that are multiples of 64 keep the number of shapes small and catch every training step.

- 4 to 16 rows in a batched decode step (several samples of one prompt: RL rollouts, pass@k evals), when
  the caller passes a packed weight. oneDNN can reorder a weight once into the blocked layout its few-row
  kernel reads (torch.ops.mkldnn._reorder_linear_weight, what torch.compile's CPU backend does for frozen
  weights); every product then skips that reorder. 16 rows, microseconds, cold / hot weights: the head
  (8192, 256) 494 / 324 vs few_rows_linear 1503 / 673; (1024, 256) 76 / 54 vs 153 / 89; (256, 256) 27 / 23
  vs 45 / 30. In a d4 decode step (model only, a noisy box): batch 16 6.1-6.5 -> 4.7-5.4 ms, batch 8
  5.8-6.3 -> 4.5-5.0 ms; at batch 2 the packed kernel was slower (3.7 vs 3.0 ms), and at batch 1 too
  (3.2 vs 2.4 ms), though faster alone with hot weights; so fewer than 4 rows stay with few_rows_linear.
  The packed copy costs memory (one more copy of the weights) and goes stale when the weight changes, so
  nanochat.gpt.packed_weights makes it only for the duration of a generation (the engine's decode loop).
  -> packed_linear, via linear(x, w, packed).

- Any other row count: F.linear (MKL).

The choice is a function of the shape alone, so a run resumed from a checkpoint makes the same choices as an
uninterrupted one. All kernels compute in fp32 and differ only in the order of the additions; with and
without gradients a shape gets the same kernel, so logits are bitwise equal either way (DPO and distillation
compare a frozen reference with its trainable copy). The packed kernel is the one exception: it runs only
where the caller hands a packed weight in and no gradient is needed (generation).
"""
import platform
import functools

import torch
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# few rows: a decode step


def few_rows_linear(x, w):
    """x @ w^T as (w @ x^T)^T, for a few rows of x (see above). A single row is doubled, because one column
    would send w @ x^T to the slow matrix-vector kernel again."""
    rows = x.reshape(-1, x.size(-1))  # (M, C)
    M = rows.size(0)
    if M == 1:
        rows = torch.cat([rows, rows])  # (2, C) (cat: ~1 us here, repeat ~8 us)
    y = torch.mm(w, rows.t())[:, :M]  # (V, M)
    return y.t().contiguous().view(*x.shape[:-1], w.size(0))  # (..., V)


# -----------------------------------------------------------------------------
# a multiple of 64 rows: oneDNN


def _onednn_mm(a, b_t):
    """a @ b_t^T by oneDNN. a: (M, K), contiguous (our callers make it so); b_t: (N, K), may be a transposed view."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, None, "none", [], "")


@functools.lru_cache(maxsize=None)
def onednn_available():
    """
    True where the oneDNN op exists and agrees with torch.mm on a small product: x86-64 builds of torch with
    oneDNN. Elsewhere (ARM Macs, builds without it, a future torch that renames the private op) we fall back
    to F.linear. Checked once per process.
    """
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(33, 40, generator=g), torch.randn(24, 40, generator=g)
        return torch.allclose(_onednn_mm(a, b), a @ b.t(), rtol=1e-5, atol=1e-5) and \
            torch.allclose(_onednn_mm(a, b.t().contiguous().t()), a @ b.t(), rtol=1e-5, atol=1e-5)  # as in backward
    except (AttributeError, RuntimeError):
        return False


def _onednn_linear(x, w):
    """x: (..., K), w: (N, K) -> (..., N)"""
    return _onednn_mm(x.reshape(-1, x.size(-1)).contiguous(), w).view(*x.shape[:-1], w.size(0))


class OneDNNLinear(torch.autograd.Function):
    """y = x @ w^T by oneDNN; backward: dx = g @ w by oneDNN (as linear(g, w^T)), dw = g^T @ x by torch.mm."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return _onednn_linear(x, w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        dx = _onednn_linear(g, w.t()) if ctx.needs_input_grad[0] else None  # (..., K)
        dw = torch.mm(g.reshape(-1, g.size(-1)).t(), x.reshape(-1, x.size(-1))) if ctx.needs_input_grad[1] else None
        return dx, dw  # dw: (N, K)


# -----------------------------------------------------------------------------
# 4 to 16 rows, weights packed once per generation: a batched decode step

PACKED_ROWS = 16  # the row count oneDNN lays the packed weight out for; it serves any count up to it
PACKED_MIN_ROWS = 4  # fewer rows: few_rows_linear (in d4 decode steps the packed kernel was slower at 2 rows)


def pack_weight(w):
    """oneDNN's blocked copy of an fp32 weight (N, K) for products of up to 16 rows; None where unavailable."""
    if w.dtype != torch.float32 or w.device.type != "cpu" or not onednn_available():
        return None
    return torch.ops.mkldnn._reorder_linear_weight(w.detach(), PACKED_ROWS)


def packed_linear(x, packed):
    """x (..., K) @ w^T with w's packed copy from pack_weight -> (..., N). No autograd. (The op takes the
    leading dims as they are: no reshape around it, ~4 us less per call of a decode step's 25.)"""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, None, "none", [], "")


# -----------------------------------------------------------------------------
# the dispatch

ONEDNN_ROWS = 64  # oneDNN for row counts that are multiples of this (see above)


def linear(x, w, packed=None):
    """
    x @ w^T for CPU tensors: 4-16 rows with a packed weight (and no gradient needed): packed_linear; up to 16
    rows otherwise few_rows_linear; oneDNN for fp32 with a multiple of 64 rows (where available); F.linear
    otherwise. `packed`: w's copy from pack_weight, or None.
    """
    rows = x.numel() // max(1, x.size(-1))
    if rows <= 16:  # a decode step of a few sequences
        grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
        if packed is not None and rows >= PACKED_MIN_ROWS and x.dtype == torch.float32 and not grad:
            return packed_linear(x, packed)
        return few_rows_linear(x, w)
    if rows % ONEDNN_ROWS or x.dtype != torch.float32 or not onednn_available():
        return F.linear(x, w)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        return OneDNNLinear.apply(x, w)
    return _onednn_linear(x, w)
