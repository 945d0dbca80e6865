"""
The output head and its loss in one chunked pass: cross-entropy of softcap * tanh(x @ W^T), computed a few
hundred rows at a time, with the gradients made in the same pass. GPT.forward uses it on CPU.

Why: written as separate ops (lm_head matmul, tanh, * softcap, log_softmax, nll), every op reads and writes a
whole (B*T, V) tensor. At the CPU benchmark size (B*T = 2048, V = 8192) that is 64 MiB per op, eight times
per step counting the backward ops, each a fresh allocation (that glibc maps page by page unless told to keep
freed memory: common.keep_freed_memory). Those passes cost about as much as all the matmuls of the blocks.
Here the (rows, V) chunk stays in cache, its buffers are reused, and the backward pass is free: d loss / d x
and d loss / d W are finished during the forward pass (the "fused linear cross-entropy" trick of Liger Kernel,
arXiv 2410.10989; our version is plain PyTorch ops on chunks). On CUDA the model keeps the separate ops:
torch.compile fuses them into a few kernels.

Math, per row with targets y (ignored rows, y = -1, count nothing):
    t = tanh(z), z = x @ W^T      logits l = c * t (c = softcap, so every l lies in (-c, c))
    loss = logsumexp(l) - l[y]     d loss / d l = softmax(l) - onehot(y)
    d loss / d z = (softmax(l) - onehot(y)) * c * (1 - t^2)
    d loss / d x = (d loss / d z) @ W         d loss / d W = (d loss / d z)^T @ x
Computed through s = sigmoid(2z), the same numbers in fewer passes over the (rows, V) chunk:
    t = 2s - 1,   l - c = 2c (s - 1),   1 - t^2 = 4 s (1 - s)
and sigmoid(2z) needs no pass for the 2: (2x) @ W^T is exactly 2 (x @ W^T) in floating point.

    loss = softcapped_cross_entropy(x, weight, targets, softcap, reduction)   # x: (N, C), weight: (V, C)
"""
import math

import torch
import torch.nn.functional as F

from nanochat import cpu_linear

# -----------------------------------------------------------------------------
# tanh, the fast way on CPU


def tanh_via_sigmoid(z, inplace=False):
    """
    tanh(z) computed as 2 * sigmoid(2z) - 1 (the same function). torch's CPU tanh kernel is slow: on a
    (128, 8192) fp32 chunk here it takes 1.54 ms, the four in-place passes below 0.44 ms. Used for the softcap
    of every logit: in training (below) and in GPT.forward. inplace=True overwrites z (no autograd); both
    modes run the same ops in the same order, so logits with and without gradients are bitwise equal (a
    frozen reference model and its policy copy must agree exactly).
    """
    if inplace:
        return z.mul_(2).sigmoid_().mul_(2).sub_(1)
    return (z * 2).sigmoid() * 2 - 1


# -----------------------------------------------------------------------------
# the chunked forward pass, which also makes the gradients

CHUNK_ELEMENTS = 2**21  # 8 MiB of fp32 logits per chunk: 256 rows at V = 8192, enough for efficient matmuls


def _chunk_rows(vocab_size):
    return max(16, CHUNK_ELEMENTS // vocab_size)


def _forward(x, weight, targets, softcap, scale, want_grad):
    """Per-row losses (N,) in fp32 (fp64 for fp64 x); with want_grad also dx (N, C) and dW (V, C) of sum(loss * scale)."""
    N, V = x.size(0), weight.size(0)
    c = softcap
    acc = torch.promote_types(x.dtype, torch.float32)  # the loss math runs in fp32 at least (bf16 x -> fp32)
    losses = torch.zeros(N, dtype=acc, device=x.device)
    dx = torch.empty_like(x) if want_grad else None
    dw = torch.zeros_like(weight) if want_grad else None
    x2 = x * 2  # (N, C): sigmoid(2z) = sigmoid((2x) @ W^T), exactly, and (N, C) is V/C times smaller than (N, V)
    linear = cpu_linear.linear if x.device.type == "cpu" else F.linear  # a @ b^T (oneDNN on CPU: see cpu_linear)
    rows = _chunk_rows(V)
    for i in range(0, N, rows):
        xc, yc = x[i:i + rows], targets[i:i + rows]  # (n, C), (n,)
        n = xc.size(0)
        valid = yc != -1
        y = yc.clamp(min=0)  # a safe index for ignored rows; their loss and gradient are zeroed below
        s = linear(x2[i:i + rows], weight).to(acc).sigmoid_()  # (n, V), s = sigmoid(2z)
        # every logit is below c, so exp(l - c) = exp(2c (s - 1)) <= 1 never overflows: no max pass needed
        # (and for c <= 40 the largest term, >= exp(-2c), cannot underflow in fp32 either). Computed as
        # 2^(k (s - 1)) with k = 2c / ln 2: torch's CPU exp2 is ~3x faster than its exp (2M elements: 0.37 vs
        # 1.3 ms here), and the scaling by 1 / ln 2 moves the result by a few fp32 ulps at most
        k2 = 2 * c / math.log(2)
        e = torch.mul(s, k2).sub_(k2).exp2_()  # (n, V)
        total = e.sum(dim=1)  # (n,)
        lse = total.log() + c
        target_logit = c * (2 * s.gather(1, y[:, None]).squeeze(1) - 1)
        losses[i:i + n] = torch.where(valid, lse - target_logit, 0.0)
        if not want_grad:
            continue
        # d loss / d z = k * (e / total - onehot(y)) * s (1 - s), with k = 4c * the reduction's scale, 0 if ignored
        k = valid.to(acc) * (4 * c * scale)  # (n,)
        p = e.mul_((k / total)[:, None])  # k * softmax, in place: one pass for the division and the scale
        p[torch.arange(n, device=x.device), y] -= k  # k * (softmax - onehot(y))
        p.mul_(s.addcmul_(s, s, value=-1))  # * s (1 - s), with s overwritten by s - s^2 (s is done with)
        dz = p.to(x.dtype)  # (n, V)
        dx[i:i + n] = linear(dz, weight.mT)  # (n, C) = dz @ W
        dw.addmm_(dz.mT, xc)  # (V, C)
    return losses, dx, dw


# -----------------------------------------------------------------------------
# autograd wrapper: backward only scales the gradients the forward pass already made


class _SoftcappedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, softcap, reduction):
        count = int((targets != -1).sum())
        scale = 1.0 if reduction == "sum" else (1.0 / count if count else float("nan"))  # mean of nothing: nan
        losses, dx, dw = _forward(x, weight, targets, softcap, scale, want_grad=True)
        ctx.save_for_backward(dx, dw)
        return losses.sum() * scale

    @staticmethod
    def backward(ctx, grad):
        # The gradients are ours alone, so they are scaled in place: no second (V, C) tensor per step. That
        # makes a second backward through the same graph (retain_graph=True) wrong, so it is refused.
        if getattr(ctx, "used", False):
            raise RuntimeError("softcapped_cross_entropy supports one backward pass per forward pass")
        ctx.used = True
        dx, dw = ctx.saved_tensors
        if grad.item() != 1.0:  # loss.backward() passes exactly 1: nothing to scale
            dx.mul_(grad.to(dx.dtype))
            dw.mul_(grad.to(dw.dtype))
        return dx, dw, None, None, None


def softcapped_cross_entropy(x, weight, targets, softcap, reduction="mean"):
    """
    Cross-entropy of logits softcap * tanh(x @ weight^T) against targets (-1 = ignore).
    x: (N, C), weight: (V, C), targets: (N,). reduction "mean" | "sum" (differentiable) or "none" -> (N,)
    (only without gradients; a per-row loss would need the full (N, V) gradient kept for the backward pass).
    """
    if not 0 < softcap <= 40:
        raise ValueError(f"softcapped_cross_entropy needs 0 < softcap <= 40 (exp range), got {softcap}")
    if reduction == "none":
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            raise ValueError("reduction='none' is only supported without gradients; use the unfused ops")
        return _forward(x, weight, targets, softcap, 1.0, want_grad=False)[0]
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        losses = _forward(x, weight, targets, softcap, 1.0, want_grad=False)[0]
        return losses.sum() / (targets != -1).sum() if reduction == "mean" else losses.sum()
    return _SoftcappedCrossEntropy.apply(x, weight, targets, softcap, reduction)
