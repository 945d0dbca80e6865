"""
Tests for DPO: the losses in nanochat/policy.py (dpo_loss, sequence_logprob_stats) against hand computations,
and the pair machinery of nanochat/preference.py (judge, pair choice, JSONL, rendering, on-policy building).
Run: python -m pytest tests/test_dpo.py -q
"""
import copy
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from nanochat.policy import collate, dpo_loss, sequence_logprob_stats, token_logprobs
from nanochat.preference import (VerifierJudge, build_pairs, choose_pair, length_score, load_pairs, mean_score,
                                 pair_batch, render_side, response_tokens, save_pairs)
from tests.tiny_model import small_tokenizer, tiny_gpt

torch.set_num_threads(1)

# -----------------------------------------------------------------------------
# the loss on hand-computed log-probs


def test_dpo_loss_matches_hand_computation():
    pc, pr = torch.tensor([-10.0, -3.0]), torch.tensor([-12.0, -2.0])
    rc, rr = torch.tensor([-11.0, -3.0]), torch.tensor([-11.0, -3.0])
    losses, reward_c, reward_r = dpo_loss(pc, pr, rc, rr, beta=0.1)
    # pair 0: rewards 0.1 * (+1) and 0.1 * (-1): margin 0.2; pair 1: 0 and 0.1: margin -0.1
    assert torch.allclose(reward_c, torch.tensor([0.1, 0.0]))
    assert torch.allclose(reward_r, torch.tensor([-0.1, 0.1]))
    expected = torch.tensor([math.log(1 + math.exp(-0.2)), math.log(1 + math.exp(0.1))])
    assert torch.allclose(losses, expected, atol=1e-6)


def test_length_normalized_dpo_matches_hand_computation():
    pc, pr, rc, rr = torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.0])
    losses, reward_c, reward_r = dpo_loss(pc, pr, rc, rr, beta=5.0, chosen_len=torch.tensor([4.0]),
                                          rejected_len=torch.tensor([2.0]))
    # log-ratios +1 over 4 tokens and -1 over 2 tokens: rewards 5 * 0.25 and 5 * -0.5, margin 3.75
    assert reward_c.item() == pytest.approx(1.25)
    assert reward_r.item() == pytest.approx(-2.5)
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-3.75)), abs=1e-6)


def test_dpo_gradient_is_beta_times_sigmoid_of_minus_margin():
    pc = torch.tensor([-10.0], requires_grad=True)
    pr = torch.tensor([-12.0], requires_grad=True)
    losses, _, _ = dpo_loss(pc, pr, torch.tensor([-11.0]), torch.tensor([-11.0]), beta=0.1)
    losses.sum().backward()
    g = 0.1 * torch.sigmoid(torch.tensor(-0.2)).item()  # d loss / d pc = -beta * sigmoid(-margin)
    assert pc.grad.item() == pytest.approx(-g)
    assert pr.grad.item() == pytest.approx(g)


def test_dpo_loss_needs_both_lengths_or_neither():
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="both chosen_len and rejected_len"):
        dpo_loss(x, x, x, x, chosen_len=torch.ones(1))


# -----------------------------------------------------------------------------
# with a real model: sums vs means, identical policy and reference


def pair_rows():
    """2 pairs: chosen rows then rejected rows, prompt tokens masked, completions of different lengths."""
    seqs = [[1, 2, 3, 4, 5, 6], [1, 7, 8, 9], [1, 2, 3, 10], [1, 7, 8, 11, 12, 13, 14]]
    masks = [[0, 0, 1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1, 1, 1, 1]]
    return collate(seqs, masks, pad_id=0)


def naive_token_logps(model, seq, mask):
    """log p of each masked-in token of one row, one forward per row, no padding."""
    logits = model(torch.tensor([seq[:-1]]))[0]  # (T, V)
    logp = F.log_softmax(logits, -1)
    return [logp[t, seq[t + 1]].item() for t in range(len(seq) - 1) if mask[t + 1]]


def test_sequence_stats_are_sums_and_counts_of_the_masked_tokens():
    model = tiny_gpt()
    inputs, targets = pair_rows()
    sums, counts = sequence_logprob_stats(model, inputs, targets)
    seqs = [[1, 2, 3, 4, 5, 6], [1, 7, 8, 9], [1, 2, 3, 10], [1, 7, 8, 11, 12, 13, 14]]
    masks = [[0, 0, 1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1, 1, 1, 1]]
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ref = naive_token_logps(model, s, m)
        assert counts[i].item() == len(ref)
        assert sums[i].item() == pytest.approx(sum(ref), abs=1e-4)


def test_sum_and_mean_variants_use_the_same_tokens_for_policy_and_reference():
    policy, ref = tiny_gpt(0), tiny_gpt(1)
    inputs, targets = pair_rows()
    p_sum, p_cnt = sequence_logprob_stats(policy, inputs, targets)
    r_sum, r_cnt = sequence_logprob_stats(ref, inputs, targets)
    assert torch.equal(p_cnt, r_cnt)  # the same masked tokens on both sides
    p_tok, r_tok = token_logprobs(policy, inputs, targets), token_logprobs(ref, inputs, targets)
    valid = targets >= 0
    mean = lambda x, i: x[i][valid[i]].mean()  # per-token mean of one row
    # length-normalized: beta * (mean policy logp - mean ref logp), computed token by token
    beta = 5.0
    for i in range(2):
        margin = beta * ((mean(p_tok, i) - mean(r_tok, i)) - (mean(p_tok, i + 2) - mean(r_tok, i + 2)))
        losses, _, _ = dpo_loss(p_sum[:2], p_sum[2:], r_sum[:2], r_sum[2:], beta, p_cnt[:2], p_cnt[2:])
        assert losses[i].item() == pytest.approx(-F.logsigmoid(margin).item(), abs=1e-5)
    # standard: the sums; with unequal lengths the two variants really differ
    std, _, _ = dpo_loss(p_sum[:2], p_sum[2:], r_sum[:2], r_sum[2:], 0.1)
    margin0 = 0.1 * ((p_tok[0].sum() - r_tok[0].sum()) - (p_tok[2].sum() - r_tok[2].sum()))
    assert std[0].item() == pytest.approx(-F.logsigmoid(margin0).item(), abs=1e-5)


@pytest.mark.parametrize("norm", [False, True])
def test_identical_policy_and_reference_give_log2_and_a_real_gradient(norm):
    policy = tiny_gpt()
    ref = copy.deepcopy(policy).requires_grad_(False)
    inputs, targets = pair_rows()
    with torch.no_grad():
        r_sum, _ = sequence_logprob_stats(ref, inputs, targets)
    p_sum, cnt = sequence_logprob_stats(policy, inputs, targets)
    lens = (cnt[:2], cnt[2:]) if norm else (None, None)
    losses, rc, rr = dpo_loss(p_sum[:2], p_sum[2:], r_sum[:2], r_sum[2:], 5.0 if norm else 0.1, *lens)
    assert torch.allclose(losses, torch.full((2,), math.log(2.0)), atol=1e-6)
    assert torch.equal(rc, torch.zeros(2)) and torch.equal(rr, torch.zeros(2))
    losses.mean().backward()  # at log 2 the gradient is beta/2 * grad(log-ratio margin): not zero
    assert sum(p.grad.abs().sum().item() for p in policy.parameters() if p.grad is not None) > 0


# -----------------------------------------------------------------------------
# the judge and the pair choice


def test_length_score_is_5_up_to_1_5x_and_1_from_3x():
    assert length_score(15, 10) == 5.0
    assert length_score(30, 10) == 1.0
    assert length_score(100, 10) == 1.0
    assert length_score(22.5, 10) == pytest.approx(3.0)


def test_choose_pair_takes_the_best_and_a_strictly_lower_one():
    rng = random.Random(0)
    for _ in range(20):
        c, r = choose_pair([2.0, 5.0, 3.0, 5.0], rng)
        assert c in (1, 3) and r in (0, 2)
    assert choose_pair([4.0, 4.0, 4.0], rng) is None


@pytest.fixture(scope="module")
def tok():
    corpus = ["Tom has 12 apples and buys 7 more. How many? 12+7 = 19 apples. #### 19 The answer is"] * 20
    return small_tokenizer(corpus, num_merges=32)


def math_conversation():
    return {"messages": [{"role": "user", "content": "Tom has 12 apples and buys 7 more. How many?"},
                         {"role": "assistant", "content": [{"type": "text", "text": "12+7 = "},
                                                           {"type": "python", "text": "12+7"},
                                                           {"type": "python_output", "text": "19"},
                                                           {"type": "text", "text": "19 apples.\n#### 19"}]}],
            "answer": "19"}


class MathTask:
    """The verifier interface of a task: reward 1 when the final '#### N' is the answer."""

    def __init__(self, conversations):
        self.conversations = conversations

    def __getitem__(self, i):
        return self.conversations[i]

    def __len__(self):
        return len(self.conversations)

    def reward(self, conversation, text):
        from tasks.verify import extract_answer
        return float(extract_answer(text) == conversation["answer"])


def test_verifier_judge_scores_correct_format_and_length(tok):
    conv = math_conversation()
    judge = VerifierJudge(MathTask([conv]), tok, max_new_tokens=64)
    ref = judge.reference_tokens(conv)
    good = judge(conv, "12+7 = 19 apples.\n#### 19", True, ref)
    assert good == {"correct": 5.0, "format": 5.0, "length": 5.0}
    wrong = judge(conv, "#### 18", True, ref)
    assert wrong["correct"] == 1.0 and wrong["format"] == 5.0
    no_answer_unfinished = judge(conv, "12+7 = 19 apples and", False, 3 * ref)
    assert no_answer_unfinished == {"correct": 1.0, "format": 1.0, "length": 1.0}
    assert mean_score(good) == 5.0 and mean_score(no_answer_unfinished) == 1.0
    assert judge(conv, "no answer", True, ref)["format"] == 3.0


# -----------------------------------------------------------------------------
# JSONL and rendering


def test_pairs_roundtrip_through_jsonl(tmp_path):
    pairs = [{"conversation": {"messages": [{"role": "user", "content": "hi ✅"}]}, "chosen": "hello",
              "rejected": [{"type": "text", "text": "go away"}], "chosen_score": 4.5}]
    path = tmp_path / "pairs.jsonl"
    save_pairs(path, pairs)
    assert load_pairs(path) == pairs


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"conversation": {"messages": [{"role": "user", "content": "x"}]}, "chosen": "a"}), "missing 'rejected'"),
    (json.dumps({"conversation": {"messages": []}, "chosen": "a", "rejected": "b"}), "ending with a user message"),
    (json.dumps({"conversation": {"messages": [{"role": "user", "content": "x"}]}, "chosen": 3, "rejected": "b"}),
     "'chosen' must be a string"),
])
def test_load_pairs_names_the_bad_line(tmp_path, line, message):
    good = json.dumps({"conversation": {"messages": [{"role": "user", "content": "x"}]}, "chosen": "a", "rejected": "b"})
    path = tmp_path / "pairs.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(ValueError, match=f"pairs.jsonl:2: .*{message}"):
        load_pairs(path)


def test_render_side_masks_tool_output_and_drops_the_end_of_an_unfinished_turn(tok):
    conv = math_conversation()
    pair = {"conversation": {"messages": conv["messages"][:1]}, "chosen": conv["messages"][1]["content"],
            "rejected": "12+7 = 18", "rejected_finished": False}
    ids_c, mask_c = render_side(tok, pair, "chosen")
    assert (ids_c, mask_c) == tuple(tok.render_conversation(conv))  # a finished turn renders as in SFT
    end = tok.encode_special("<|assistant_end|>")
    ids_r, mask_r = render_side(tok, pair, "rejected")
    assert ids_r[-1] != end and sum(mask_r) == len(tok.encode("12+7 = 18"))
    out = ids_c.index(tok.encode_special("<|output_start|>"))
    assert mask_c[out] == 0 and mask_c[out + 1] == 0  # the tool's output is given, never learned
    assert response_tokens(tok, pair, "rejected") == sum(mask_r)
    inputs, targets = pair_batch(tok, [pair], pad_id=0)
    assert inputs.shape[0] == 2
    assert (targets[0] >= 0).sum().item() == sum(mask_c[1:])  # row 0 chosen, row 1 rejected
    assert (targets[1] >= 0).sum().item() == sum(mask_r[1:])


# -----------------------------------------------------------------------------
# building pairs from a pool (engines replaced by scripted ones)


class ScriptedEngine:
    """Engine stand-in: returns fixed completions (as text) in turn, whatever the prompt."""

    def __init__(self, tok, texts, finish=True):
        self.tok, self.texts, self.finish, self.calls = tok, texts, finish, 0
        self.model = torch.nn.Linear(1, 1)

    def generate_batch(self, prompt, num_samples=1, include_stop=False, **kwargs):
        rows, masks = [], []
        for _ in range(num_samples):
            ids = self.tok.encode(self.texts[self.calls % len(self.texts)])
            self.calls += 1
            if self.finish:
                ids = ids + [self.tok.encode_special("<|assistant_end|>")]
            rows.append(list(prompt) + ids)
            masks.append([0] * len(prompt) + [1] * len(ids))
        return rows, masks


def test_build_pairs_spreads_responses_over_the_pool_and_picks_by_judge_score(tok):
    conv = math_conversation()
    task = MathTask([conv, conv, conv])
    judge = VerifierJudge(task, tok, max_new_tokens=64)
    policy = ScriptedEngine(tok, ["12+7 = 19 apples.\n#### 19"])  # always right
    other = ScriptedEngine(tok, ["#### 18"])  # always wrong
    pairs, info = build_pairs(task, [0, 1, 2], [("policy", policy), ("other", other)], tok, judge, num_responses=4)
    assert policy.calls == 6 and other.calls == 6  # 2 + 2 responses per prompt
    assert info["pairs"] == 3 and info["all_tied"] == 0
    assert info["mean_score"]["policy"] == 5.0
    for p in pairs:
        assert p["chosen_model"] == "policy" and p["rejected_model"] == "other"
        assert p["chosen"] == [{"type": "text", "text": "12+7 = 19 apples.\n#### 19"}]
        assert p["chosen_score"] > p["rejected_score"]
        assert p["conversation"]["messages"][-1]["role"] == "user"  # the gold answer is not in the prompt
    tied, info = build_pairs(task, [0], [("policy", policy)], tok, judge, num_responses=4)
    assert tied == [] and info["all_tied"] == 1
