"""
Tests for nanochat/policy.py: collate masks, log-probs, advantages, loss normalizations, PPO clipping, k3 KL.
Every number is checked against a hand computation or a naive re-implementation.
Run: python -m pytest tests/test_policy.py -q
"""
import math

import pytest
import torch
import torch.nn.functional as F

from nanochat.policy import (collate, token_logprobs, sequence_logprobs, compute_advantages, nonconstant_groups,
                             shape_rewards, loss_weights, pg_token_loss, k3_kl, policy_loss, make_optimizer,
                             set_lr_multiplier)
from tests.tiny_model import tiny_gpt

torch.set_num_threads(1)

# -----------------------------------------------------------------------------
# a tiny model whose logits we can also perturb by hand


class TableModel(torch.nn.Module):
    """logits[b, t] = table[inputs[b, t]] + bias[b, t]: simple enough to differentiate by hand."""

    def __init__(self, V, T_max=16, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(V, V, generator=g))
        self.register_buffer("bias", torch.zeros(4, T_max, V))

    def forward(self, idx):
        B, T = idx.shape
        return self.table[idx] + self.bias[:B, :T]


# -----------------------------------------------------------------------------
# collate


def test_collate_shifts_and_masks_prompt_forced_and_padding():
    seqs = [[1, 2, 3, 4, 5], [6, 7, 8]]
    masks = [[0, 0, 1, 0, 1], [0, 1, 1]]  # row 0: prompt 1,2; sampled 3; forced 4; sampled 5
    inputs, targets = collate(seqs, masks, pad_id=9)
    assert inputs.tolist() == [[1, 2, 3, 4], [6, 7, 9, 9]]
    assert targets.tolist() == [[-1, 3, -1, 5], [7, 8, -1, -1]]


def test_collate_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="mask of length"):
        collate([[1, 2, 3]], [[0, 1]])
    with pytest.raises(ValueError, match="same"):
        collate([[1, 2]], [])


# -----------------------------------------------------------------------------
# log-probs


def test_token_logprobs_match_log_softmax_and_cross_entropy():
    model = tiny_gpt()
    inputs, targets = collate([[1, 2, 3, 4, 5, 6], [7, 8, 9]], [[0, 0, 1, 1, 0, 1], [0, 1, 1]])
    logp, ent = token_logprobs(model, inputs, targets, with_entropy=True)
    logits = model(inputs)
    ref = -F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-1, reduction="none")  # (B, T)
    torch.testing.assert_close(logp, ref)
    assert (logp[targets < 0] == 0).all() and (ent[targets < 0] == 0).all()
    p = logits.softmax(-1)
    ref_ent = -(p * p.log()).sum(-1)
    torch.testing.assert_close(ent[targets >= 0], ref_ent[targets >= 0])
    torch.testing.assert_close(sequence_logprobs(model, inputs, targets), ref.sum(-1))


def test_masked_tokens_contribute_nothing_to_the_gradient():
    """Perturbing the logits at masked positions (prompt, forced, padding) leaves the gradient unchanged."""
    V = 6
    seqs, masks = [[1, 2, 3, 4, 5], [2, 3, 4]], [[0, 0, 1, 0, 1], [0, 1, 1]]
    inputs, targets = collate(seqs, masks)
    adv = torch.tensor([1.0, -0.5])
    w = loss_weights(targets >= 0, "token")

    def grad_with(bias):
        model = TableModel(V)
        model.bias[:2, : inputs.size(1)] = bias
        logp = token_logprobs(model, inputs, targets)
        loss, _ = policy_loss(logp, logp.detach(), adv, w)
        loss.backward()
        return model.table.grad.clone()

    g0 = grad_with(torch.zeros(2, inputs.size(1), V))
    noise = torch.zeros(2, inputs.size(1), V)
    masked = targets < 0
    noise[masked] = 5.0 * torch.randn(int(masked.sum()), V)
    torch.testing.assert_close(grad_with(noise), g0, rtol=0, atol=0)
    noise[~masked] = 0.1  # a non-uniform change at a sampled position does change the gradient (sanity)
    noise[0, 1, 0] = 3.0
    assert not torch.allclose(grad_with(noise), g0)


# -----------------------------------------------------------------------------
# advantages


def test_advantages_hand_computed():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    mean = compute_advantages(r, "mean")
    torch.testing.assert_close(mean, torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.25, 0.25, 0.25, -0.75]]))
    # GRPO divides by the population std: group 0 std = 0.5, group 1 std = sqrt(3)/4 = 0.4330127
    grpo = compute_advantages(r, "grpo", eps=0.0)
    s = math.sqrt(3) / 4
    torch.testing.assert_close(grpo, torch.tensor([[1.0, -1.0, -1.0, 1.0], [0.25 / s, 0.25 / s, 0.25 / s, -0.75 / s]]))
    # Dr. GRPO does not divide: the rarer-answer group keeps its smaller scale (0.75 vs GRPO's 1.732)
    torch.testing.assert_close(compute_advantages(r, "drgrpo"), mean)
    assert grpo[1, 3].item() == pytest.approx(-math.sqrt(3), rel=1e-6)


def test_constant_groups_have_zero_advantage_and_zero_gradient():
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.3, 0.3, 0.3]])
    for kind in ("mean", "grpo", "drgrpo"):
        assert (compute_advantages(r, kind) == 0).all(), kind
    assert nonconstant_groups(torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])).tolist() == [False, True, False]
    model = tiny_gpt()
    inputs, targets = collate([[1, 2, 3, 4], [1, 2, 5, 6], [1, 2, 7, 8]], [[0, 0, 1, 1]] * 3)
    logp = token_logprobs(model, inputs, targets)
    adv = compute_advantages(r[:1], "grpo").view(-1)  # one group of 3 samples, all rewarded 1
    loss, _ = policy_loss(logp, logp.detach(), adv, loss_weights(targets >= 0, "token"))
    loss.backward()
    assert all((p.grad is None or (p.grad == 0).all()) for p in model.parameters())


def test_bad_advantage_kind_and_shape():
    with pytest.raises(ValueError, match="expected one of"):
        compute_advantages(torch.zeros(2, 2), "ppo")
    with pytest.raises(ValueError, match="prompts, samples_per_prompt"):
        compute_advantages(torch.zeros(4), "mean")


def test_shape_rewards():
    r = shape_rewards([1.0, 0.0, 0.0], finished=[1, 1, 0], well_formed=[1, 1, 0], format_reward=0.1,
                      unfinished_penalty=0.5)
    torch.testing.assert_close(r, torch.tensor([1.1, 0.1, -0.5]))


# -----------------------------------------------------------------------------
# normalization of the loss over tokens and sequences


def test_token_vs_sequence_vs_constant_weights_hand_computed():
    valid = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)  # lengths 2 and 4
    tok = loss_weights(valid, "token")
    torch.testing.assert_close(tok, torch.tensor([[1 / 6, 1 / 6, 0, 0], [1 / 6] * 4]))
    seq = loss_weights(valid, "sequence")
    torch.testing.assert_close(seq, torch.tensor([[1 / 4, 1 / 4, 0, 0], [1 / 8] * 4]))  # 1/(2 seqs * len)
    const = loss_weights(valid, "constant", max_len=8)
    torch.testing.assert_close(const, torch.tensor([[1 / 16, 1 / 16, 0, 0], [1 / 16] * 4]))
    # the total weight: token and sequence sum to 1, Dr. GRPO's constant to (tokens / (seqs * max_len))
    assert tok.sum().item() == pytest.approx(1.0) and seq.sum().item() == pytest.approx(1.0)
    assert const.sum().item() == pytest.approx(6 / 16)
    with pytest.raises(ValueError, match="max_len"):
        loss_weights(valid, "constant")


def test_split_step_weights_add_up_to_the_full_batch():
    valid = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    for norm in ("token", "sequence", "constant"):
        full = loss_weights(valid, norm, max_len=3)
        parts = [loss_weights(valid[i:i + 2], norm, num_tokens=valid.sum(), num_seqs=4, max_len=3) for i in (0, 2)]
        torch.testing.assert_close(torch.cat(parts), full)


def test_drgrpo_gradient_differs_from_grpo_as_documented():
    """
    Two rewarded answers of lengths 1 and 3 in a group of 2 with rewards (1, 0). Per token, GRPO
    (std-normalized advantage, per-sequence mean) gives the short right answer weight +1/(2*1) and each
    token of the long wrong one -1/(2*3); Dr. GRPO (r - mean, sum / (G * max_len)) gives +0.5/(2*4) and
    -0.5/(2*4): equal per-token weight, no length bias.
    """
    r = torch.tensor([[1.0, 0.0]])
    valid = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    g = compute_advantages(r, "grpo", eps=0.0).view(-1, 1) * loss_weights(valid, "sequence")
    d = compute_advantages(r, "drgrpo").view(-1, 1) * loss_weights(valid, "constant", max_len=4)
    torch.testing.assert_close(g, torch.tensor([[0.5, 0, 0], [-1 / 6, -1 / 6, -1 / 6]]))
    torch.testing.assert_close(d, torch.tensor([[1 / 16, 0, 0], [-1 / 16, -1 / 16, -1 / 16]]))


# -----------------------------------------------------------------------------
# PPO clipping and KL


def test_pg_loss_matches_the_ppo_formula():
    logp = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.6]]))
    old = torch.log(torch.tensor([[0.4, 0.3, 0.4, 0.3]]))  # ratios 1.25, 1.0, 0.5, 2.0
    for A in (1.0, -1.0):
        got = pg_token_loss(logp, old, torch.tensor([A]), clip_eps=0.2)
        want = []
        for ratio in (1.25, 1.0, 0.5, 2.0):
            want.append(-min(ratio * A, min(max(ratio, 0.8), 1.2) * A))
        torch.testing.assert_close(got, torch.tensor([want]))
    # A > 0: ratio 1.25 is clipped to 1.2 -> no gradient; A < 0: ratio 0.5 is clipped to 0.8 -> no gradient
    x = logp.clone().requires_grad_(True)
    pg_token_loss(x, old, torch.tensor([1.0])).sum().backward()
    assert x.grad[0, 0] == 0 and x.grad[0, 3] == 0 and x.grad[0, 1] == pytest.approx(-1.0)
    assert x.grad[0, 2] == pytest.approx(-0.5)  # unclipped below 1 for A > 0: d(ratio*A)/dlogp = ratio


def test_first_epoch_is_reinforce():
    """With old_logp = logp (one on-policy update), the gradient is -A * grad log pi, weighted."""
    model = tiny_gpt()
    inputs, targets = collate([[1, 2, 3, 4, 5], [1, 6, 7]], [[0, 1, 1, 1, 1], [0, 1, 1]])
    adv = torch.tensor([0.7, -0.7])
    w = loss_weights(targets >= 0, "token")
    logp = token_logprobs(model, inputs, targets)
    loss, stats = policy_loss(logp, logp.detach(), adv, w)
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    model.zero_grad()
    reinforce = -(w * adv.view(-1, 1) * token_logprobs(model, inputs, targets)).sum()
    ref = torch.autograd.grad(reinforce, list(model.parameters()), allow_unused=True)
    for a, b in zip(grads, ref):
        if a is not None:
            torch.testing.assert_close(a, b)
    assert stats["clip_frac"].item() == 0.0


def test_k3_kl_zero_for_identical_and_hand_value():
    lp = torch.log(torch.tensor([[0.2, 0.5, 0.9]]))
    assert (k3_kl(lp, lp) == 0).all()
    ref = torch.log(torch.tensor([[0.4, 0.25, 0.9]]))
    # k3 = q/p - log(q/p) - 1 with q/p = pi_ref/pi: 2 - ln 2 - 1, 0.5 - ln 0.5 - 1, 0
    want = torch.tensor([[1 - math.log(2), -0.5 + math.log(2), 0.0]])
    torch.testing.assert_close(k3_kl(lp, ref), want)
    # k3 is an unbiased estimate of KL(pi || ref): average it over exact samples of a small distribution
    pi = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.3, 0.3, 0.4])
    exact_kl = (pi * (pi / q).log()).sum()
    expectation = (pi * k3_kl(pi.log(), q.log())).sum()
    torch.testing.assert_close(expectation, exact_kl)


def test_policy_loss_with_kl_adds_beta_times_weighted_k3():
    logp = torch.log(torch.tensor([[0.2, 0.5]]))
    ref = torch.log(torch.tensor([[0.4, 0.25]]))
    w = torch.tensor([[0.5, 0.5]])
    base, _ = policy_loss(logp, logp, torch.tensor([1.0]), w)
    with_kl, stats = policy_loss(logp, logp, torch.tensor([1.0]), w, ref_logp=ref, kl_beta=0.1)
    kl = 0.5 * (1 - math.log(2)) + 0.5 * (-0.5 + math.log(2))
    assert stats["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert (with_kl - base).item() == pytest.approx(0.1 * kl, rel=1e-5)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, logp, torch.tensor([1.0]), w, kl_beta=0.1)


# -----------------------------------------------------------------------------
# the optimizer of the post-training scripts


def test_make_optimizer_scales_the_training_lrs_and_the_schedule_scales_initial_lr():
    from nanochat.optim import setup_optimizer
    model = tiny_gpt()
    full = [g["lr"] for g in setup_optimizer(model).param_groups]
    muon = make_optimizer(model, "muon", init_lr_frac=0.05)
    assert [g["lr"] for g in muon.param_groups] == pytest.approx([0.05 * lr for lr in full])
    assert all(g["initial_lr"] == g["lr"] for g in muon.param_groups)
    set_lr_multiplier(muon, 0.25)
    assert [g["lr"] for g in muon.param_groups] == pytest.approx([0.25 * 0.05 * lr for lr in full])
    adamw = make_optimizer(model, "adamw", lr=3e-4)
    assert isinstance(adamw, torch.optim.AdamW)
    assert sum(len(g["params"]) for g in adamw.param_groups) == len(list(model.parameters()))
    assert [(g["lr"], g["initial_lr"]) for g in adamw.param_groups] == [(3e-4, 3e-4)]
    with pytest.raises(ValueError, match="expected one of muon, adamw"):
        make_optimizer(model, "sgd")
