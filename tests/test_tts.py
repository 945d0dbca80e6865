"""
Tests for nanochat/tts.py: thinking-token counts, majority vote, s1's Control / Scaling / Performance against
hand computations, and a budget run through the real Engine with a scripted model.
Run: python -m pytest tests/test_tts.py -q
"""
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from nanochat.engine import Engine
from nanochat.tokenizer import Tokenizer, SPLIT_PATTERN
from nanochat.tts import (control, majority_at, majority_vote, performance, run_problems, s1_select, scaling,
                          sweep_point, think_prompt, thinking_tokens, trace_problem)

torch.set_num_threads(1)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S, E = 1000, 1001  # stand-ins for <|think_start|>, <|think_end|>

# -----------------------------------------------------------------------------
# counting and voting


def test_thinking_tokens_counts_inside_spans_only():
    assert thinking_tokens([5, S, 1, 2, 3, E, 7, 8], S, E) == 3
    assert thinking_tokens([S, E, 9], S, E) == 0
    assert thinking_tokens([S, 1, 2, E, 4, S, 5, E], S, E) == 3  # two spans add up
    assert thinking_tokens([S, 1, 2, 3, 4], S, E) == 4  # never closed: runs to the end
    assert thinking_tokens([1, 2, E, 3], S, E) == 0  # a stray end opens nothing


def test_majority_vote_ties_and_missing_answers():
    assert majority_vote(["3", "4", "4", None, None, None]) == "4"  # None never wins, however many
    assert majority_vote(["5", "6", "6", "5"]) == "5"  # tie: the answer seen first
    assert majority_vote([None, "9"]) == "9"
    assert majority_vote([None, None]) is None
    assert majority_vote(["1"]) == "1"


# -----------------------------------------------------------------------------
# s1's metrics, against hand computations


def test_control_fraction_within_budget():
    assert control([3, 5, 8, 10], max_tokens=8) == 0.75
    assert control([3, 5, 8, 10], min_tokens=5, max_tokens=8) == 0.5
    assert control([3, 5], min_tokens=None, max_tokens=None) == 1.0
    with pytest.raises(ValueError):
        control([])


def test_scaling_is_mean_pairwise_slope():
    pts = [(30, 0.5), (0, 0.0), (10, 0.5)]  # unsorted on purpose
    # all pairs: (0,10): 0.05, (0,30): 0.5/30, (10,30): 0.0 -> mean 0.02222; neither the mean of consecutive
    # slopes (0.025) nor the end-to-end slope (0.01667)
    assert scaling(pts) == pytest.approx((0.05 + 0.5 / 30 + 0.0) / 3)
    # on a line the mean slope is the line's slope, whatever the spacing
    line = [(x, 0.1 + 0.003 * x) for x in (4, 9, 30, 31, 100)]
    assert scaling(line) == pytest.approx(0.003)
    # equal x gives no slope; fewer than two distinct x gives None
    assert scaling([(5, 0.1), (5, 0.9), (15, 0.9)]) == pytest.approx(((0.9 - 0.1) / 10 + 0.0) / 2)
    assert scaling([(5, 0.1), (5, 0.2)]) is None
    assert scaling([(1, 0.9), (2, 0.5)]) == pytest.approx(-0.4)  # can be negative: more thinking hurt


def test_performance_is_best_accuracy():
    assert performance([(1, 0.2), (5, 0.6), (9, 0.4)]) == 0.6
    with pytest.raises(ValueError):
        performance([])


def test_majority_at_and_sweep_point_by_hand():
    records = [dict(answer="4", answers=["4", "5", "5"], correct=[1, 0, 0], think=[2, 4, 6], voted="5", voted_correct=0),
               dict(answer="7", answers=["1", "7", "7"], correct=[0, 1, 1], think=[3, 3, 3], voted="7", voted_correct=1)]
    assert majority_at(records, 1) == 0.5  # first samples: "4" right, "1" wrong
    assert majority_at(records, 2) == 0.5  # ties go to the first: "4" right, "1" wrong
    assert majority_at(records, 3) == 0.5  # "5" wrong, "7" right
    with pytest.raises(ValueError):
        majority_at(records, 4)
    p = sweep_point(records, max_tokens=4)
    assert p["accuracy"] == pytest.approx(3 / 6)
    assert p["think_tokens"] == pytest.approx(21 / 6)
    assert p["control"] == pytest.approx(5 / 6)  # only the 6 is over budget
    assert p["majority"] == 0.5 and p["n"] == 2 and p["samples"] == 6


# -----------------------------------------------------------------------------
# s1K-style curation: quality and diversity


def think_conv(think, answer_text, answer):
    return {"messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": [{"type": "think", "text": think},
                                                           {"type": "text", "text": answer_text}]}], "answer": answer}


def test_trace_problem_catches_each_defect():
    assert trace_problem(think_conv("They cost 6*7 = 42 dollars.\nChange: 50-42 = 8.", "The answer is 8.\n#### 8", "8")) is None
    assert trace_problem(think_conv("  ", "#### 8", "8")) == "no thinking"
    assert trace_problem({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "#### 8"}],
                          "answer": "8"}) == "no thinking"
    assert trace_problem(think_conv("6*7 = 42", "The answer is 42.", "42")) == "final answer missing or wrong"
    assert trace_problem(think_conv("6*7 = 42", "#### 41", "42")) == "final answer missing or wrong"
    assert trace_problem(think_conv("6*7 = 42\nthen 42+5 = 48 apples", "#### 48", "48")) == "wrong arithmetic 42+5 = 48"
    assert trace_problem(think_conv("(3+4)*2 = 14 and 9/3 = 3", "#### 14", "14")) is None  # parentheses, division


def test_s1_select_uniform_over_families_longest_favoured():
    import random
    # families a, b, c with 300 candidates each, c only 20: c runs out, a and b fill the rest evenly
    families = ["a"] * 300 + ["b"] * 300 + ["c"] * 20
    lengths = [i % 300 for i in range(600)] + list(range(20))
    picked = s1_select(families, lengths, range(620), 200, random.Random(0))
    assert len(picked) == len(set(picked)) == 200
    counts = {f: sum(families[i] == f for i in picked) for f in "abc"}
    assert counts["c"] == 20 and abs(counts["a"] - 90) <= 25 and abs(counts["b"] - 90) <= 25
    # longest first: with weights 2^-rank the k picks of a family are close to its k longest (mean rank about
    # k/2); a uniform draw would have a mean rank near 150
    a_ranks = [299 - lengths[i] for i in picked if families[i] == "a"]
    assert sum(a_ranks) / len(a_ranks) < 0.7 * len(a_ranks)
    # only candidates are picked; asking for more than there are is a clear error
    assert set(s1_select(families, lengths, [0, 5, 400], 3, random.Random(1))) == {0, 5, 400}
    with pytest.raises(ValueError, match="only 3 candidates"):
        s1_select(families, lengths, [0, 5, 400], 4, random.Random(1))


# -----------------------------------------------------------------------------
# a budget run through the real engine


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(SPLIT_PATTERN, {bytes([i]): i for i in range(256)})  # byte-level: no training needed


class ThinkThenAnswer(torch.nn.Module):
    """
    A fake GPT: after the prompt it thinks 'x' for `natural` tokens, ends its thinking, writes '#### 7' and
    stops. It keeps the token ids as its KV-cache "keys" so each row sees exactly its own history.
    """

    def __init__(self, tok, prompt_len, natural):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vocab_size=tok.get_vocab_size(), n_layer=1, n_head=1, n_kv_head=1, n_embd=1)
        self.tok, self.prompt_len, self.natural = tok, prompt_len, natural
        self.answer = tok.encode("#### 7") + [tok.encode_special("<|assistant_end|>")]

    def next_token(self, history):
        end = self.tok.encode_special("<|think_end|>")
        gen = history[self.prompt_len:]
        if end in gen:
            done = len(gen) - gen.index(end) - 1
            return self.answer[done] if done < len(self.answer) else self.answer[-1]
        return end if len(gen) >= self.natural else self.tok.encode("x")[0]

    def forward(self, idx, kv_cache=None):
        B, T = idx.shape
        x = idx.float().view(B, 1, T, 1)
        history, _ = kv_cache.insert_kv(0, x, x)  # (B, 1, T_cache, 1)
        logits = torch.full((B, T, self.config.vocab_size), -1e4)
        for b in range(B):
            logits[b, -1, self.next_token(history[b, 0, :, 0].long().tolist())] = 0.0
        return logits


def test_run_problems_budget_forcing_and_scoring(tok):
    task = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "#### 7"}], "answer": "7"},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "#### 8"}], "answer": "8"}]
    prompt, base = think_prompt(tok, task[0])
    assert prompt[-1] == tok.encode_special("<|think_start|>") and base == len(prompt) - 1
    engine = Engine(ThinkThenAnswer(tok, len(prompt), natural=12), tok)
    # no budget: the model thinks its natural 12 tokens and answers 7
    recs = run_problems(engine, tok, task, [0, 1], num_samples=2, max_new_tokens=40)
    assert [r["think"] for r in recs] == [[12, 12], [12, 12]]
    assert [r["correct"] for r in recs] == [[1, 1], [0, 0]] and [r["voted_correct"] for r in recs] == [1, 0]
    # a cap below the natural length: exactly the cap, and the forced end still lets the model answer
    recs = run_problems(engine, tok, task, [0], num_samples=3, max_new_tokens=40, max_think_tokens=5)
    assert recs[0]["think"] == [5, 5, 5] and recs[0]["answers"] == ["7", "7", "7"]
    assert sweep_point(recs, max_tokens=5)["control"] == 1.0
    # a floor above it: the early end becomes "Wait" (4 forced thinking tokens), once; this model tries to
    # end again right after it, and with max_waits=1 it may
    recs = run_problems(engine, tok, task, [0], max_new_tokens=60, min_think_tokens=30, max_waits=1)
    assert recs[0]["think"] == [12 + len(tok.encode("Wait"))] and recs[0]["answers"] == ["7"]
    assert sweep_point(recs, min_tokens=30)["control"] == 0.0  # the floor was not reached: Control says so


# -----------------------------------------------------------------------------
# scripts/chat_tts.py end to end on a tiny random model


def run_chat_tts(base_dir, *args):
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(base_dir), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "scripts.chat_tts", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def tts_base_dir(tmp_path_factory):
    """The tiny tokenizer and a random 1-layer model saved as sft/t: it babbles, so the budgets do all the work."""
    from nanochat.checkpoint import save_checkpoint
    from nanochat.gpt import GPTConfig, build_model
    from tests.tiny_model import tiny_base_dir
    base = tmp_path_factory.mktemp("tts")
    shutil.copytree(os.path.join(tiny_base_dir(), "tokenizer"), base / "tokenizer")
    vocab = Tokenizer.from_directory(str(base / "tokenizer")).get_vocab_size()
    torch.manual_seed(0)
    cfg = GPTConfig(sequence_len=256, vocab_size=vocab, n_layer=1, n_head=2, n_kv_head=2, n_embd=32)
    save_checkpoint(str(base / "checkpoints" / "sft" / "t"), 1, build_model(cfg, torch.device("cpu")),
                    meta=dict(model_config=cfg.to_dict()))
    return base


def test_chat_tts_script_budgets_hold_and_outputs(tts_base_dir):
    r = run_chat_tts(tts_base_dir, "--num-problems", "2", "--task-seeds", "5,6", "--max-think", "0,3,none",
                     "--min-think", "6", "--num-samples", "2", "--max-new-tokens", "12")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.load(open(tts_base_dir / "tts" / "t" / "results.json"))
    assert [run["task_seed"] for run in res["runs"]] == [5, 6]
    for run in res["runs"]:
        caps = {p["budget"]: p for p in run["max_think"]}
        assert set(caps) == {0, 3, None}
        assert all(t == 0 for rec in caps[0]["records"] for t in rec["think"])
        assert all(t <= 3 for rec in caps[3]["records"] for t in rec["think"])
        assert all(t <= 12 for rec in caps[None]["records"] for t in rec["think"])
        assert [p["budget"] for p in run["parallel"]] == [1, 2]
        assert all(len(rec["answers"]) == 2 for rec in run["parallel_records"])
    assert res["metrics"]["control"] == 1.0  # max budgets always hold
    assert (tts_base_dir / "tts" / "t" / "tts.svg").read_text().startswith("<svg")
    assert (tts_base_dir / "report" / "test-time-scaling-t.md").exists()


def test_chat_tts_script_clear_errors(tts_base_dir):
    r = run_chat_tts(tts_base_dir, "--max-think", "8,lots")
    assert r.returncode != 0 and "bad budget 'lots'" in r.stderr and "Traceback" not in r.stderr
    r = run_chat_tts(tts_base_dir, "--model-tag", "nope", "--num-problems", "1")
    assert r.returncode != 0 and "error" in (r.stdout + r.stderr) and "Traceback" not in r.stderr
