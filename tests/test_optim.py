"""
Tests for nanochat/optim.py: Newton-Schulz vs the SVD, AdamW vs torch.optim.AdamW, Muon vs a float64 reference,
and 2 gloo processes vs 1 process with 2x gradient accumulation.

    python -m pytest tests/test_optim.py -q
"""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from nanochat import optim
from nanochat.gpt import GPTConfig, build_model
from nanochat.optim import MuonAdamW, setup_optimizer, zeropower_via_newtonschulz5, newton_schulz_dtype

torch.set_num_threads(1)


def test_newton_schulz_is_close_to_orthogonal():
    torch.manual_seed(0)
    Q1, Q2 = torch.linalg.qr(torch.randn(48, 48))[0], torch.linalg.qr(torch.randn(48, 48))[0]
    square = Q1 @ torch.diag(torch.linspace(0.05, 1.0, 48)) @ Q2  # a square Gaussian has sigma_min ~ 0
    for G in [torch.randn(64, 32), torch.randn(32, 96), square]:
        shape = tuple(G.shape)
        O = zeropower_via_newtonschulz5(G).float()  # in the policy dtype: bf16 where native
        s = torch.linalg.svdvals(O)
        # Keller Jordan's coefficients land singular values in roughly [0.7, 1.2], not exactly 1
        assert s.min() > 0.6 and s.max() < 1.25, (shape, s.min(), s.max())
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        polar = U @ Vh  # the exact orthogonal factor
        cos = (O * polar).sum() / (O.norm() * polar.norm())
        assert cos > 0.97


def test_newton_schulz_in_bf16_is_close_to_fp32():
    # bf16 is the default wherever bf16 matmuls are native (CUDA, AVX512-BF16/AMX CPUs): same direction and
    # spectrum as fp32, for both forms of the iteration (the Gram form's bf16 spectrum measured 0.024 off
    # here at (256, 64), the standard form's 0.018)
    torch.manual_seed(0)
    for G in [torch.randn(256, 64), torch.randn(64, 256), torch.randn(128, 128)]:
        O32 = zeropower_via_newtonschulz5(G, dtype=torch.float32, method="standard")
        for method, atol in (("standard", 0.02), ("gram", 0.03)):
            O16 = zeropower_via_newtonschulz5(G, dtype=torch.bfloat16, method=method).float()
            cos = (O16 * O32).sum() / (O16.norm() * O32.norm())
            assert cos > 0.995, (method, cos)
            s16, s32 = torch.linalg.svdvals(O16), torch.linalg.svdvals(O32)
            torch.testing.assert_close(s16, s32, atol=atol, rtol=0)  # the same spectrum, to bf16 precision


def test_gram_form_is_the_same_iteration():
    # in float64 the Gram form (auto for 4x wide / tall matrices) and the standard form agree to rounding,
    # with the restart, without it, and for other step counts
    torch.manual_seed(0)
    for G in [torch.randn(32, 128), torch.randn(128, 32), torch.randn(3, 16, 64)]:
        G = G.double()
        standard = zeropower_via_newtonschulz5(G, dtype=torch.float64, method="standard")
        torch.testing.assert_close(zeropower_via_newtonschulz5(G, dtype=torch.float64), standard,
                                   atol=1e-10, rtol=1e-10)
        for steps in (1, 2, 3, 7):
            for restart in (2, 99):
                X = optim.zeropower_via_newtonschulz5(G, steps=steps, dtype=torch.float64, method="standard")
                wide = G if G.size(-2) <= G.size(-1) else G.mT
                wide = (wide / wide.norm(dim=(-2, -1), keepdim=True)).reshape(-1, *wide.shape[-2:])
                Y = optim._gram_newton_schulz(wide, steps, restart=restart)
                Y = Y.reshape(G.shape if G.size(-2) <= G.size(-1) else G.mT.shape)
                torch.testing.assert_close(Y if G.size(-2) <= G.size(-1) else Y.mT, X, atol=1e-7, rtol=0)
    assert optim.GRAM_MIN_ASPECT * 32 <= 128  # the MLP shape (n_embd, 4 n_embd) takes the Gram form


def test_gram_form_in_bf16_matches_the_standard_form_and_needs_its_restart():
    # bf16 on matrices with a decaying spectrum (like real momentum): the Gram form's error against the
    # float64 result stays near the standard form's; without the restart it blows up (singular values ~4)
    torch.manual_seed(0)
    U = torch.linalg.qr(torch.randn(4, 64, 64))[0]
    V = torch.linalg.qr(torch.randn(4, 256, 64))[0]
    G = U @ torch.diag(torch.logspace(0, -4, 64)) @ V.mT  # (4, 64, 256)
    exact = zeropower_via_newtonschulz5(G.double(), dtype=torch.float64, method="standard")

    def error(O):
        return ((O.double() - exact).norm() / exact.norm()).item()

    standard = error(zeropower_via_newtonschulz5(G, dtype=torch.bfloat16, method="standard"))
    gram = zeropower_via_newtonschulz5(G, dtype=torch.bfloat16, method="gram")
    assert error(gram) < max(2 * standard, 0.05), (error(gram), standard)
    assert torch.linalg.svdvals(gram.float()).max() < 1.4
    Xn = (G / G.norm(dim=(-2, -1), keepdim=True)).bfloat16()
    no_restart = optim._gram_newton_schulz(Xn, 5, restart=99)
    assert torch.linalg.svdvals(no_restart.float()).max() > 2


def test_newton_schulz_dtype_policy():
    assert newton_schulz_dtype(torch.device("cuda")) == torch.bfloat16
    expected = torch.bfloat16 if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() \
        else torch.float32
    assert newton_schulz_dtype(torch.device("cpu")) == expected


def test_muon_step_matches_float64_reference_and_is_orthogonal():
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(96, 32))  # tall: scale sqrt(96/32)
    W0 = W.detach().clone().double()
    opt = MuonAdamW([dict(params=[W], kind="muon", lr=0.1, momentum=0.9, nesterov=True, ns_steps=5)],
                    ns_dtype=torch.float32)
    buf = torch.zeros_like(W0)
    for step in range(3):
        g = torch.randn(96, 32)
        W.grad = g.clone()
        opt.step()
        g = g.double()
        buf = 0.9 * buf + 0.1 * g
        upd = 0.1 * g + 0.9 * buf  # Nesterov: g.lerp(buf, momentum)
        O = zeropower_via_newtonschulz5(upd.float(), dtype=torch.float32).double()
        W0 = W0 - 0.1 * 3**0.5 * O
        if step == 0:  # the first update, rescaled, is close to orthogonal
            s = torch.linalg.svdvals(O)
            assert s.min() > 0.6 and s.max() < 1.25
    torch.testing.assert_close(W.detach().double(), W0, atol=1e-5, rtol=1e-5)


def test_muon_batched_by_shape_equals_one_matrix_at_a_time():
    # the optimizer stacks same-shape matrices (a tall one turned wide joins the wide ones) into one batched
    # Newton-Schulz; every matrix must get exactly the update it would get alone
    torch.manual_seed(0)
    shapes = [(16, 48), (48, 16), (16, 48), (24, 24), (24, 24), (8, 40)]
    together = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
    alone = [torch.nn.Parameter(p.detach().clone()) for p in together]
    groups = [dict(params=together[:3], kind="muon", lr=0.05, momentum=0.9, nesterov=True, ns_steps=5),
              dict(params=together[3:], kind="muon", lr=0.02, momentum=0.95, nesterov=False, ns_steps=5,
                   weight_decay=0.1)]
    opt = MuonAdamW(groups, ns_dtype=torch.float32)
    singles = [MuonAdamW([dict(g, params=[alone[i]])], ns_dtype=torch.float32)
               for g, idx in ((groups[0], range(3)), (groups[1], range(3, 6))) for i in idx]
    for _ in range(3):
        for pt, pa in zip(together, alone):
            g = torch.randn_like(pt)
            pt.grad, pa.grad = g.clone(), g.clone()
        opt.step()
        for single in singles:
            single.step()
    for pt, pa in zip(together, alone):
        torch.testing.assert_close(pt, pa, atol=1e-6, rtol=1e-6)
    batched = zeropower_via_newtonschulz5(torch.stack([p.detach() for p in together[3:5]]), dtype=torch.float32)
    for i, p in enumerate(together[3:5]):
        torch.testing.assert_close(batched[i], zeropower_via_newtonschulz5(p.detach(), dtype=torch.float32),
                                   atol=1e-6, rtol=1e-6)


def test_adamw_matches_torch_adamw():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(10, 7)), torch.nn.Parameter(torch.randn(5))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ours = MuonAdamW([dict(params=a, kind="adamw", lr=0.01, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.1)])
    ref = torch.optim.AdamW(b, lr=0.01, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.1, foreach=False)
    for step in range(5):
        for pa, pb in zip(a, b):
            g = torch.randn_like(pa)
            pa.grad, pb.grad = g.clone(), g.clone()
        if step == 3:  # a schedule changes lr mid-run
            ours.param_groups[0]["lr"] = ref.param_groups[0]["lr"] = 0.003
        ours.step()
        ref.step()
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-6)


def test_setup_optimizer_groups_and_width_scaling():
    model = build_model(GPTConfig(sequence_len=16, vocab_size=32, n_layer=2, n_head=2, n_kv_head=2,
                                  n_embd=192), "cpu")
    opt = setup_optimizer(model, embedding_lr=0.2, unembedding_lr=0.004, matrix_lr=0.02)
    kinds = [g["kind"] for g in opt.param_groups]
    assert kinds == ["adamw", "adamw", "muon"]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.004 * 2)  # (192/768)^-0.5 = 2
    assert opt.param_groups[1]["lr"] == pytest.approx(0.2 * 2)
    assert opt.param_groups[2]["lr"] == 0.02
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == model.num_params()
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([dict(params=[torch.nn.Parameter(torch.zeros(3))], kind="muon")])


# -----------------------------------------------------------------------------
# distributed: 2 gloo processes == 1 process with 2x gradient accumulation

CFG = dict(sequence_len=16, vocab_size=48, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)
STEPS, B, T = 4, 4, 16


def batches():
    g = torch.Generator().manual_seed(123)
    return [torch.randint(0, 48, (B, T + 1), generator=g) for _ in range(STEPS)]


def train(world_size, rank, accum):
    """Each step: this rank's share of the batch, split into `accum` micro-batches."""
    torch.manual_seed(0)
    model = build_model(GPTConfig(**CFG), "cpu", torch.float32)
    opt = setup_optimizer(model, embedding_lr=0.1, unembedding_lr=0.05, matrix_lr=0.05)
    losses = []
    for batch in batches():
        shard = batch.chunk(world_size)[rank]
        step_loss = 0.0
        for micro in shard.chunk(accum):
            loss = model(micro[:, :-1], micro[:, 1:]) / accum
            loss.backward()
            step_loss += loss.item()
        opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(step_loss)
    owned = {n for n, p in model.named_parameters() if p in opt.state and opt.state[p]}
    return losses, {k: v.clone() for k, v in model.state_dict().items()}, owned


def ddp_worker(rank, world_size, port, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from nanochat.common import compute_init, compute_cleanup
    compute_init("cpu")
    result = train(world_size, rank, accum=1)
    # Muon and Adam are nearly blind to the gradient's scale, so check the averaging itself: with betas 0 and
    # eps 1 Adam's step is -lr * g / (|g| + 1); ranks send g = 1 and 2, the mean 1.5 gives -0.6 (sum: -0.75)
    p = torch.nn.Parameter(torch.zeros(4))
    opt = MuonAdamW([dict(params=[p], kind="adamw", lr=1.0, betas=(0.0, 0.0), eps=1.0, weight_decay=0.0)])
    p.grad = torch.full((4,), float(rank + 1))
    opt.step()
    torch.save((*result, p.detach().clone()), os.path.join(out_dir, f"rank{rank}.pt"))
    compute_cleanup()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_rank_with_grad_accumulation(tmp_path):
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ref_losses, ref_state, _ = train(1, 0, accum=2)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # the full-batch loss is the mean of the two ranks' half-batch losses
    for step, ref in enumerate(ref_losses):
        assert abs((r0[0][step] + r1[0][step]) / 2 - ref) < 1e-5
    for k in ref_state:
        torch.testing.assert_close(r0[1][k], ref_state[k], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r1[1][k], r0[1][k], atol=0, rtol=0)  # broadcast: identical on all ranks
    for r in (r0, r1):
        torch.testing.assert_close(r[3], torch.full((4,), -0.6))
    # optimizer state is sharded: every parameter has state on exactly one rank
    assert r0[2].isdisjoint(r1[2]) and r0[2] | r1[2] == set(ref_state) and r0[2] and r1[2]
