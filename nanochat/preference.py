"""
Preference pairs for DPO (scripts/chat_dpo.py), built on-policy as in Tulu 3 (arXiv 2411.15124, sec. 5.2):
for each prompt, sample several responses from a pool of checkpoints that includes the policy being trained,
score each one with a judge on a 1-5 scale along a few aspects, take the best mean score as "chosen" and a
random strictly lower one as "rejected". Pairs are JSONL so they can also be written by hand or by another
tool and loaded instead.

    judge = VerifierJudge(task, tokenizer, max_new_tokens=128)
    pairs, info = build_pairs(task, range(256), [("sft", engine), ("rl", rl_engine)], tokenizer, judge)
    save_pairs("pairs.jsonl", pairs); pairs = load_pairs("pairs.jsonl")
    inputs, targets = pair_batch(tokenizer, pairs, pad_id)   # (2P, T): P chosen rows, then P rejected

A pair is a JSON object, one per line:
    {"conversation": {"messages": [..., {"role": "user", ...}]},      # the prompt, ending with a user turn
     "chosen": str | [part, ...], "rejected": str | [part, ...],      # assistant turns (tool calls as parts)
     "chosen_finished": true, "rejected_finished": true,             # optional: did the turn end itself
     "chosen_score": 4.7, "rejected_score": 2.0, ...}                 # optional: anything else is kept as is

The judge. Tulu 3 asks GPT-4o for 1-5 ratings on four aspects and averages them; here the aspects are
checked by code (the task's verifier, format and length rules, so the whole recipe runs offline):
    correct: 1 + 4 * task reward (SynthMath: right final answer; SynthIF: fraction of constraints met)
    format:  5 finished and well formed (math: a parseable "#### N"), 3 finished but no answer, 1 unfinished
    length:  5 up to 1.5x the reference answer's length, falling linearly to 1 at 3x (a rambling answer that
             happens to be right should lose to a concise right one)
CheckpointJudge replaces the verifier with a checkpoint: "correct" is 5 when the response's final answer
agrees with the judge model's own greedy answer, else 1 (for prompts without a verifier, or to study a
judge that is sometimes wrong).
"""
import json
import random

import torch

from nanochat.policy import collate
from nanochat.rollout import completion_parts, sample_group
from tasks.verify import extract_answer

ASPECTS = ("correct", "format", "length")

# -----------------------------------------------------------------------------
# judges: (conversation, response) -> {aspect: score in [1, 5]}


def length_score(num_tokens, ref_tokens):
    """5 up to 1.5x the reference length, linear down to 1 at 3x and beyond."""
    ratio = num_tokens / max(ref_tokens, 1)
    return float(min(5.0, max(1.0, 5.0 - 4.0 * (ratio - 1.5) / 1.5)))


class VerifierJudge:
    """Scores with the task's verifier plus format and length rules (see the module docstring)."""

    def __init__(self, task, tokenizer, max_new_tokens, math=True):
        self.task, self.tokenizer, self.max_new_tokens, self.math = task, tokenizer, max_new_tokens, math

    def reference_tokens(self, conversation):
        """Tokens of the gold assistant turn, if the conversation carries one, else half the sampling limit."""
        messages = conversation["messages"]
        if messages and messages[-1]["role"] == "assistant":
            _, mask = self.tokenizer.render_conversation(conversation, max_tokens=1 << 30)
            return sum(mask)
        return self.max_new_tokens // 2

    def correct(self, conversation, text):
        return 1.0 + 4.0 * float(self.task.reward(conversation, text))

    def __call__(self, conversation, text, finished, num_tokens):
        formed = extract_answer(text) is not None if self.math else True
        return {"correct": self.correct(conversation, text),
                "format": 5.0 if finished and formed else (3.0 if finished else 1.0),
                "length": length_score(num_tokens, self.reference_tokens(conversation))}


class CheckpointJudge(VerifierJudge):
    """'correct' = agreement of final answers with a judge checkpoint's greedy answer (math tasks)."""

    def __init__(self, engine, task, tokenizer, max_new_tokens):
        super().__init__(task, tokenizer, max_new_tokens, math=True)
        self.engine, self.cache = engine, {}

    def judge_answer(self, conversation):
        key = json.dumps(conversation["messages"][:-1] if conversation["messages"][-1]["role"] == "assistant"
                         else conversation["messages"])
        if key not in self.cache:
            group = sample_group(self.engine, self.tokenizer, conversation, 1, self.max_new_tokens, temperature=0.0)
            self.cache[key] = extract_answer(group.texts[0])
        return self.cache[key]

    def correct(self, conversation, text):
        answer, judged = extract_answer(text), self.judge_answer(conversation)
        return 5.0 if answer is not None and answer == judged else 1.0


def mean_score(scores):
    return sum(scores.values()) / len(scores)


def choose_pair(means, rng):
    """(chosen, rejected) indices: the best mean score (ties: a random one), a random strictly lower one; None if all tie."""
    best = max(means)
    top = [i for i, m in enumerate(means) if m == best]
    lower = [i for i, m in enumerate(means) if m < best]
    if not lower:
        return None
    return rng.choice(top), rng.choice(lower)


# -----------------------------------------------------------------------------
# building pairs on-policy from a pool of checkpoints


def prompt_of(conversation):
    """The conversation up to its last user turn (a gold assistant answer, if any, is dropped)."""
    messages = conversation["messages"]
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return {"messages": list(messages)}


def build_pairs(task, indices, pool, tokenizer, judge, num_responses=4, max_new_tokens=128, temperature=1.0,
                top_k=None, seed=0, log=None):
    """
    pool: [(name, engine), ...], the policy first. Response j of the k-th prompt comes from model
    (j + k) % len(pool), so every model contributes evenly. Returns (pairs, info) where info counts prompts,
    pairs, prompts skipped because every response tied, and the mean score per model.
    """
    rng = random.Random(seed)
    pairs, ties = [], 0
    per_model = {name: [] for name, _ in pool}
    for k, index in enumerate(indices):
        conversation = task[index]
        responses = []  # (model name, completion ids, text, finished)
        for m, (name, engine) in enumerate(pool):
            count = sum(1 for j in range(num_responses) if (j + k) % len(pool) == m)
            if count == 0:
                continue
            g = sample_group(engine, tokenizer, conversation, count, max_new_tokens, temperature, top_k,
                             seed=seed * 1_000_003 + k * 101 + m)
            responses += [(name, c, t, f) for c, t, f in zip(g.completions, g.texts, g.finished)]
        scores = [judge(conversation, text, done, len(ids)) for _, ids, text, done in responses]
        means = [mean_score(s) for s in scores]
        for (name, *_), m in zip(responses, means):
            per_model[name].append(m)
        picked = choose_pair(means, rng)
        if picked is None:
            ties += 1
            continue
        c, r = picked
        side = lambda i: completion_parts(tokenizer, responses[i][1])
        pairs.append({"conversation": prompt_of(conversation), "chosen": side(c), "rejected": side(r),
                      "chosen_finished": responses[c][3], "rejected_finished": responses[r][3],
                      "chosen_score": means[c], "rejected_score": means[r], "chosen_scores": scores[c],
                      "rejected_scores": scores[r], "chosen_model": responses[c][0],
                      "rejected_model": responses[r][0], "index": int(index)})
        if log is not None and (k + 1) % 50 == 0:
            log(f"  pairs: {k + 1}/{len(indices)} prompts -> {len(pairs)} pairs ({ties} all-tied)")
    info = {"prompts": len(indices), "pairs": len(pairs), "all_tied": ties,
            "mean_score": {n: sum(v) / max(len(v), 1) for n, v in per_model.items()}}
    return pairs, info


# -----------------------------------------------------------------------------
# JSONL in and out


def save_pairs(path, pairs):
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")


def _check_pair(p, where):
    if not isinstance(p, dict):
        raise ValueError(f"{where}: a pair must be a JSON object, got {type(p).__name__}")
    for key in ("conversation", "chosen", "rejected"):
        if key not in p:
            raise ValueError(f"{where}: missing {key!r}; a pair needs conversation, chosen and rejected")
    messages = p["conversation"].get("messages") if isinstance(p["conversation"], dict) else None
    if not isinstance(messages, list) or not messages or messages[-1].get("role") != "user":
        raise ValueError(f"{where}: 'conversation' must be {{\"messages\": [...]}} ending with a user message")
    for key in ("chosen", "rejected"):
        if not isinstance(p[key], (str, list)):
            raise ValueError(f"{where}: {key!r} must be a string or a list of parts, got {type(p[key]).__name__}")


def load_pairs(path):
    """Pairs from a JSONL file, each line checked (a bad line raises ValueError naming file, line and field)."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                p = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg}); write one pair object per line") from None
            _check_pair(p, f"{path}:{n}")
            pairs.append(p)
    if not pairs:
        raise ValueError(f"{path}: no pairs in the file")
    return pairs


# -----------------------------------------------------------------------------
# pairs -> tensors


def render_side(tokenizer, pair, side, max_tokens=2048):
    """(ids, mask) of the prompt followed by the chosen or rejected turn; an unfinished turn gets no end token."""
    conversation = {"messages": pair["conversation"]["messages"] + [{"role": "assistant", "content": pair[side]}]}
    ids, mask = tokenizer.render_conversation(conversation, max_tokens=1 << 30)
    if not pair.get(f"{side}_finished", True) and ids[-1] == tokenizer.encode_special("<|assistant_end|>"):
        ids, mask = ids[:-1], mask[:-1]
    return ids[:max_tokens], mask[:max_tokens]


def pair_batch(tokenizer, pairs, pad_id, device="cpu", max_tokens=2048):
    """inputs, targets (2P, T): rows 0..P-1 the chosen sides, P..2P-1 the rejected ones (targets -1 off-mask)."""
    rendered = [render_side(tokenizer, p, s, max_tokens) for s in ("chosen", "rejected") for p in pairs]
    return collate([r[0] for r in rendered], [r[1] for r in rendered], pad_id, device)


def response_tokens(tokenizer, pair, side):
    """Tokens the model produced in one side (its mask-1 tokens): the length that DPO logs and normalizes by."""
    return sum(render_side(tokenizer, pair, side)[1])


# -----------------------------------------------------------------------------
# held-out evaluation with the judge: what DPO is meant to move


@torch.no_grad()
def judge_eval(engine, tokenizer, task, judge, num_problems, max_new_tokens, seed=0):
    """
    Greedy answers to the first num_problems of task, each scored by the judge. Returns mean judge score,
    accuracy (the task's own evaluate), mean response length in tokens, and per-item records with "correct"
    (for nanochat.task_eval.paired_difference) and "score".
    """
    items = []
    for i in range(min(num_problems, len(task))):
        conversation = task[i]
        g = sample_group(engine, tokenizer, conversation, 1, max_new_tokens, temperature=0.0, seed=seed + i)
        text, done, n = g.texts[0], g.finished[0], len(g.completions[0])
        items.append({"index": i, "correct": int(bool(task.evaluate(conversation, text))),
                      "score": mean_score(judge(conversation, text, done, n)), "length": n})
    n = max(len(items), 1)
    return {"score": sum(it["score"] for it in items) / n, "accuracy": sum(it["correct"] for it in items) / n,
            "length": sum(it["length"] for it in items) / n, "n": len(items), "items": items}
