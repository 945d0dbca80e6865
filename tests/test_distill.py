"""
Tests for on-policy distillation: reverse_kl_advantages and tokenizer_mismatch (nanochat/policy.py) and the
tokenizer check at the start of scripts/chat_distill.py.
Run: python -m pytest tests/test_distill.py -q
"""
import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from nanochat.policy import (collate, loss_weights, pg_token_loss, reverse_kl_advantages, token_logprobs,
                             tokenizer_mismatch)
from tests.tiny_model import small_tokenizer, tiny_base_dir, tiny_gpt

torch.set_num_threads(1)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LogitsModel(torch.nn.Module):
    """The logits are a parameter (B, T, V): the gradient of every position can be read off directly."""

    def __init__(self, B, T, V, seed=0):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.randn(B, T, V, generator=torch.Generator().manual_seed(seed)))

    def forward(self, idx):
        return self.logits[:, :idx.size(1)]


# rows: prompt (mask 0), sampled tokens (1), a forced tool output (0), padding
SEQS = [[1, 2, 3, 4, 5, 6], [1, 2, 7, 8]]
MASKS = [[0, 0, 1, 0, 1, 1], [0, 0, 1, 1]]


def distill_loss(student, teacher, inputs, targets):
    """The loss of scripts/chat_distill.py's on-policy step (teacher-coef 1, no task reward)."""
    valid = targets >= 0
    logp = token_logprobs(student, inputs, targets)
    with torch.no_grad():
        t_logp = token_logprobs(teacher, inputs, targets)
    adv = reverse_kl_advantages(logp, t_logp, valid)
    w = loss_weights(valid, "token")
    return (w * pg_token_loss(logp, logp.detach(), adv)).sum(), adv, logp, t_logp


# -----------------------------------------------------------------------------
# the advantage


def test_advantage_is_teacher_minus_student_on_sampled_tokens_only():
    inputs, targets = collate(SEQS, MASKS, pad_id=0)
    student, teacher = tiny_gpt(0), tiny_gpt(1)
    _, adv, logp, t_logp = distill_loss(student, teacher, inputs, targets)
    valid = targets >= 0
    assert torch.allclose(adv[valid], (t_logp - logp.detach())[valid])
    assert torch.equal(adv[~valid], torch.zeros_like(adv[~valid]))  # prompt, forced output, padding
    assert (adv[valid] != 0).all()


def test_teacher_equal_to_student_gives_zero_advantages_and_no_update():
    inputs, targets = collate(SEQS, MASKS, pad_id=0)
    student = tiny_gpt(0)
    teacher = copy.deepcopy(student).requires_grad_(False)
    loss, adv, _, _ = distill_loss(student, teacher, inputs, targets)
    assert torch.equal(adv, torch.zeros_like(adv))
    loss.backward()
    assert all(p.grad is None or torch.equal(p.grad, torch.zeros_like(p.grad)) for p in student.parameters())


def test_masked_tokens_get_no_gradient_and_sampled_ones_get_reinforce():
    inputs, targets = collate(SEQS, MASKS, pad_id=0)
    B, T = inputs.shape
    V = 12
    student, teacher = LogitsModel(B, T, V, seed=0), LogitsModel(B, T, V, seed=1).requires_grad_(False)
    loss, adv, _, _ = distill_loss(student, teacher, inputs, targets)
    loss.backward()
    grad = student.logits.grad  # (B, T, V)
    valid = targets >= 0
    assert torch.equal(grad[~valid], torch.zeros_like(grad[~valid]))  # prompt, tool output, padding: nothing
    # on a sampled token: d loss / d logits = -w * A * (onehot(target) - softmax(logits)), as REINFORCE says
    n = valid.sum()
    p = F.softmax(student.logits.detach(), -1)
    onehot = F.one_hot(targets.clamp(min=0), V).float()
    expected = -(adv / n).unsqueeze(-1) * (onehot - p)
    assert torch.allclose(grad[valid], expected[valid], atol=1e-6)
    assert (grad[valid].abs().sum(-1) > 0).all()


def test_advantage_mean_is_minus_the_reverse_kl_sampled_from_the_student():
    """E_{x ~ student}[A(x)] = -KL(student || teacher) at a position: checked exactly by summing over x."""
    s = torch.log_softmax(torch.randn(7, generator=torch.Generator().manual_seed(0)), -1)
    t = torch.log_softmax(torch.randn(7, generator=torch.Generator().manual_seed(1)), -1)
    adv = reverse_kl_advantages(s, t, torch.ones(7, dtype=torch.bool))
    expected = (s.exp() * adv).sum()
    assert expected.item() == pytest.approx(-F.kl_div(t, s, log_target=True, reduction="sum").item(), abs=1e-6)


# -----------------------------------------------------------------------------
# the shared-tokenizer check


@pytest.fixture(scope="module")
def tokenizers():
    corpus = ["Tom has 12 apples and buys 7 more. How many? 12+7=19 #### 19 The quick brown fox."] * 20
    a, b, c = small_tokenizer(corpus, 24), small_tokenizer(corpus, 24), small_tokenizer(corpus, 8)
    d = small_tokenizer(["zzzz yyyy xxxx wwww 123 456"] * 20, 8)
    return a, b, c, d


def test_tokenizer_mismatch(tokenizers):
    a, b, c, d = tokenizers
    assert tokenizer_mismatch(a, b) is None
    assert "vocab sizes differ" in tokenizer_mismatch(a, c)
    assert "different ids" in tokenizer_mismatch(c, d)


def test_chat_distill_refuses_a_teacher_with_another_tokenizer(tmp_path, tokenizers):
    base = tiny_base_dir()
    other = tmp_path / "other_tok"
    tokenizers[3].save(str(other))
    env = dict(os.environ, NANOCHAT_BASE_DIR=base, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "scripts.chat_distill", "--source", "sft", "--model-tag", "tiny", "--device-type",
           "cpu", "--teacher-dir", os.path.join(base, "checkpoints", "sft", "tiny"), "--teacher-tokenizer", str(other)]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "must share the tokenizer" in out.stderr and "Traceback" not in out.stderr
