"""
The optimizer: Muon for the 2-D matrices of the Transformer blocks, AdamW for the embedding and the lm_head,
in ONE class that runs the same code with or without a process group.

Muon (Keller Jordan, 2024, "Muon: An optimizer for hidden layers", kellerjordan.github.io/posts/muon; analysed
in arXiv 2502.16982) takes SGD-momentum's update and replaces it by the nearest semi-orthogonal matrix, found
with a few Newton-Schulz iterations. Every direction of the matrix then moves by about the same amount.
AdamW (arXiv 1711.05101) remains best for the embedding (sparse rows) and the output head.

Distributed (ZeRO-2 style, arXiv 1910.02054): every parameter has one owner rank (assigned greedily by size so
the work is balanced). Per step: each gradient is summed onto its owner (`reduce`), only the owner keeps
optimizer state for it and computes the update, then the owner `broadcast`s the new weights. That moves the
same bytes as all_reduce but keeps 1/world of the optimizer state and update work per rank. We use
reduce + broadcast, not reduce_scatter + all_gather, because gloo (our CPU backend) does not implement
reduce_scatter in every torch version, while reduce and broadcast exist on gloo and NCCL alike: one code path.
With world_size 1 the communication is simply skipped, so there is no second implementation to drift.

Use it like any torch optimizer: loss.backward(); opt.step(); model.zero_grad(set_to_none=True).
The model is NOT wrapped in DistributedDataParallel: this optimizer does the gradient averaging.
"""
import math
import functools

import torch
import torch.distributed as dist

# -----------------------------------------------------------------------------
# Newton-Schulz orthogonalization


@functools.lru_cache(maxsize=None)  # asked once per parameter per step; the CPU's answer never changes
def newton_schulz_dtype(device):
    """
    bf16 on CUDA and on CPUs with native bf16 dot products (AVX512-BF16 or AMX: 2-3x the fp32 matmul rate
    there, measured by scripts/model_bench.py's machine), fp32 on other CPUs, where bf16 is emulated and slow.
    """
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu":
        native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
            getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        return torch.bfloat16 if native else torch.float32
    return torch.float32


NS_COEFFS = (3.4445, -4.7750, 2.0315)  # Keller Jordan's quintic: see zeropower_via_newtonschulz5
GRAM_MIN_ASPECT = 2  # the Gram form for matrices at least this many times wider than tall (cheaper there)
GRAM_RESTART = 3  # the Gram form recomputes its Gram matrix from X before this iteration (stability in bf16)


@torch.no_grad()
def zeropower_via_newtonschulz5(G, steps=5, dtype=None, method="auto"):
    """
    Approximately U V^T for G = U S V^T (the "zeroth power" of G), by a quintic Newton-Schulz iteration.
    G is one matrix (m, n) or a stack of same-shape matrices (k, m, n), each orthogonalized on its own.
    The coefficients (a, b, c) = (3.4445, -4.7750, 2.0315) are Keller Jordan's: they push singular values
    quickly into roughly [0.7, 1.2] rather than converging exactly to 1, which is all Muon needs.
    The iteration is robust to bf16 (Keller Jordan runs it in bf16), so `dtype` defaults to bf16 wherever bf16
    matmuls are fast (newton_schulz_dtype) and fp32 elsewhere.
    method: "standard" iterates on X; "gram" runs the same iteration on the small Gram matrix (below), which
    needs fewer FLOPs for wide matrices; "auto" picks "gram" when the matrix is >= GRAM_MIN_ASPECT times wider
    than tall (the MLP's matrices, 4x), "standard" otherwise (the square attention matrices).
    """
    assert G.ndim in (2, 3), "Muon orthogonalizes matrices (or a stack of them)"
    assert method in ("auto", "standard", "gram"), method
    X = G.to(dtype or newton_schulz_dtype(G.device))
    single = X.ndim == 2
    if single:
        X = X[None]  # (1, m, n): one code path, batched matmuls
    transposed = X.size(-2) > X.size(-1)
    if transposed:  # iterate on the wide orientation: X @ X^T is then the smaller Gram matrix
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral <= Frobenius norm <= 1: inside the region of convergence
    if method == "auto":
        method = "gram" if X.size(-1) >= GRAM_MIN_ASPECT * X.size(-2) else "standard"
    X = _gram_newton_schulz(X, steps) if method == "gram" else _newton_schulz(X, steps)
    if transposed:
        X = X.mT
    return X[0] if single else X


def _newton_schulz(X, steps):
    """X (k, m, n) with m <= n and spectral norm <= 1. Per iteration X <- a X + (b A + c A^2) X, A = X X^T."""
    a, b, c = NS_COEFFS
    for _ in range(steps):
        A = X @ X.mT  # (k, m, m)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b*A + c*A@A, fused: one pass instead of three
        X = torch.baddbmm(X, B, X, beta=a)  # a*X + B@X
    return X


def _gram_newton_schulz(X, steps, restart=GRAM_RESTART):
    """
    The iteration of _newton_schulz, rewritten to work on (m, m) matrices only ("Gram Newton-Schulz": Dao AI
    Lab, 2026, tridao.me/blog/2026/gram-newton-schulz; the same idea is in DeepSpeed's Muon).

    Each step is X_{i+1} = P X_i with P = a I + B, B = b R_i + c R_i^2, R_i = X_i X_i^T. So X_i = Q_i X_0 for
    a polynomial Q_i of R_0, and all these symmetric matrices commute. Then
        R_{i+1} = P R_i P     and     Q_{i+1} = P Q_i,
    products of (m, m) matrices, and the wide (m, n) matrix is touched only at the start (R_0 = X_0 X_0^T)
    and the end (Q X_0). Counted in (m, m, m) products for n = 4m and 5 steps: 30 instead of 45.
    Two details keep it as accurate as the standard form in bf16 (measured against float64 on matrices with
    flat and decaying spectra; tests/test_optim.py):
    - P is never formed: P M = a M + B M is one baddbmm that adds a M in fp32, as _newton_schulz does. Rounding
      P itself to bf16 (its diagonal is ~3.4) tripled the error of the singular values.
    - R drifts: rounding makes tiny eigenvalues slightly negative, and the iteration then grows them instead
      of pushing them up to ~1 (the blog's analysis). Recomputing X = Q X_0 and R = X X^T once, before step
      `restart`, fixes it; without it, singular values up to ~4 came out. Before step 3 (of 5) was more
      accurate here than before step 2.
    """
    a, b, c = NS_COEFFS
    X0, Q = X, None
    R = X0 @ X0.mT  # (k, m, m)
    for i in range(steps):
        if i == restart and Q is not None:  # restart from X = Q X_0 (see above)
            X0, Q = Q @ X0, None
            R = X0 @ X0.mT
        B = torch.baddbmm(R, R, R, beta=b, alpha=c)  # b R + c R^2
        if Q is None:  # Q = P: the one place P is formed (unavoidably; right after a restart its R is fresh)
            Q = B.clone()
            Q.diagonal(dim1=-2, dim2=-1).add_(a)
        else:
            Q = torch.baddbmm(Q, B, Q, beta=a)  # P Q = a Q + B Q
        if i + 1 < steps and i + 1 != restart:  # the next step needs R (unless it recomputes it)
            PR = torch.baddbmm(R, B, R, beta=a)  # P R
            R = torch.baddbmm(PR, PR, B, beta=a)  # P R P = a PR + PR B
    return X0 if Q is None else Q @ X0


# -----------------------------------------------------------------------------
# the optimizer


class MuonAdamW(torch.optim.Optimizer):
    """
    Param groups carry kind="muon" (2-D matrices: lr, momentum, nesterov, ns_steps, weight_decay) or
    kind="adamw" (lr, betas, eps, weight_decay). Scripts change group["lr"] / group["momentum"] for schedules.
    """

    def __init__(self, param_groups, ns_dtype=None):
        self.ns_dtype = ns_dtype  # Newton-Schulz dtype; None: newton_schulz_dtype of each parameter's device
        defaults = dict(lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True, ns_steps=5,
                        betas=(0.8, 0.95), eps=1e-10)
        super().__init__(param_groups, defaults)
        for group in self.param_groups:
            if group.get("kind") not in ("muon", "adamw"):
                raise ValueError(f"param group kind must be 'muon' or 'adamw', got {group.get('kind')!r}")
            if group["kind"] == "muon" and any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Muon param groups may only contain 2-D matrices")
            group.setdefault("initial_lr", group["lr"])
        self.distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        # owner of each parameter: largest first onto the least-loaded rank (deterministic on every rank)
        params = [p for group in self.param_groups for p in group["params"]]
        load = [0] * self.world_size
        self.owner = {}
        for i in sorted(range(len(params)), key=lambda i: (-params[i].numel(), i)):
            r = min(range(self.world_size), key=lambda r: (load[r], r))
            self.owner[params[i]] = r
            load[r] += params[i].numel()

    @torch.no_grad()
    def step(self):
        # 1) sum every gradient onto its owner; all launched at once so communication overlaps
        pending = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:  # every rank must take part in every collective, so use a zero gradient
                    p.grad = torch.zeros_like(p)
                work = None
                if self.distributed:
                    work = dist.reduce(p.grad, dst=self.owner[p], op=dist.ReduceOp.SUM, async_op=True)
                pending.append((group, p, work))
        # 2) the owner updates its parameters (AdamW one by one, Muon batched by shape below)
        muon_jobs = []
        for group, p, work in pending:
            if work is not None:
                work.wait()
            if self.owner[p] == self.rank:
                grad = p.grad / self.world_size if self.distributed else p.grad  # mean over ranks
                if group["kind"] == "muon":
                    muon_jobs.append((group, p, grad))
                else:
                    self._adamw_update(group, p, grad)
        self._muon_updates(muon_jobs)
        # 3) every owner sends its new weights to everyone
        if self.distributed:
            broadcasts = [dist.broadcast(p.data, src=self.owner[p], async_op=True) for _, p, _ in pending]
            for work in broadcasts:
                work.wait()

    def _adamw_update(self, group, p, grad):
        """Decoupled weight decay + Adam with bias correction, exactly as torch.optim.AdamW computes it."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if wd:
            p.mul_(1 - lr * wd)
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias1 = 1 - beta1 ** state["step"]
        bias2 = 1 - beta2 ** state["step"]
        denom = state["exp_avg_sq"].sqrt().div_(math.sqrt(bias2)).add_(eps)  # one new tensor, not two
        p.addcdiv_(state["exp_avg"], denom, value=-lr / bias1)

    def _muon_updates(self, jobs):
        """
        Muon for a list of (group, param, grad): momentum (Nesterov by default) per matrix, then Newton-Schulz
        for all matrices of one shape at once, then the scaled step. Stacking same-shape matrices into one
        batched matmul (at d4: 16 square ones, and 8 MLP ones with c_fc turned wide) gives the same result as
        one call per matrix and was ~25% faster on CPU here (bf16: 85 -> 64 ms per step); on a GPU it also
        means a few kernel launches instead of one set per matrix.
        """
        updates, groups = [], {}
        for group, p, grad in jobs:
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.lerp_(grad, 1 - group["momentum"])
            update = grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
            tall = p.size(0) > p.size(1)
            updates.append(update.mT if tall else update)  # (rows <= cols): tall and wide of one size stack
            key = (tuple(updates[-1].shape), group["ns_steps"], update.device)
            groups.setdefault(key, []).append(len(updates) - 1)
        for (_, steps, _), idx in groups.items():
            ortho = zeropower_via_newtonschulz5(torch.stack([updates[i] for i in idx]), steps=steps,
                                                dtype=self.ns_dtype)  # (k, rows, cols)
            for j, i in enumerate(idx):
                group, p, _ = jobs[i]
                update = ortho[j].mT if p.size(0) > p.size(1) else ortho[j]
                # an orthogonal (rows x cols) matrix has RMS entry 1/sqrt(max dim); sqrt(max(1, rows/cols))
                # restores a comparable per-entry step size for tall matrices (e.g. the MLP's c_fc)
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * scale)  # bf16 update into fp32 p: upcast on the fly, no copy


# -----------------------------------------------------------------------------
# the one place that decides which parameter gets which optimizer and learning rate


def setup_optimizer(model, embedding_lr=0.2, unembedding_lr=0.004, matrix_lr=0.02, weight_decay=0.0,
                    adam_betas=(0.8, 0.95)):
    """
    MuonAdamW for a GPT. The AdamW learning rates were tuned at n_embd 768 and are scaled by
    (n_embd / 768) ** -0.5 (the 1/sqrt(width) rule of muP, arXiv 2203.03466, as nanochat does); Muon's
    update is already normalized per matrix, so its lr is not scaled.
    """
    groups = model.param_groups()
    width_scale = (model.config.n_embd / 768) ** -0.5
    adam = dict(kind="adamw", betas=tuple(adam_betas), eps=1e-10, weight_decay=weight_decay)
    param_groups = [
        dict(params=groups["lm_head"], lr=unembedding_lr * width_scale, **adam),
        dict(params=groups["embedding"], lr=embedding_lr * width_scale, **adam),
        dict(params=groups["matrix"], kind="muon", lr=matrix_lr, momentum=0.95, nesterov=True, ns_steps=5,
             weight_decay=0.0),
    ]
    return MuonAdamW(param_groups)
