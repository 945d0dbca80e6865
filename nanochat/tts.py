"""
Test-time scaling (s1, arXiv 2501.19393): spend more compute at inference and measure what it buys.

Two ways to spend it, both on a model trained to think (`<|think_start|> ... <|think_end|>` then the answer):
- sequential scaling, budget forcing: cap the thinking at B tokens (the engine forces `<|think_end|>` and the
  model answers), or forbid it to stop before B tokens (the engine replaces an early `<|think_end|>` by
  "Wait" and the model goes on). The budgets live in nanochat/engine.py; this file runs them over a task.
- parallel scaling: sample N answers and take the majority vote (self-consistency, arXiv 2203.11171).

And the paper's three numbers for a sweep over budgets (its section 3.2), computed from points
(x = mean thinking tokens of a run, y = accuracy of that run):
- Control: the fraction of runs whose thinking stayed within the budget asked for (budget forcing: 100%).
- Scaling: the mean slope of accuracy over thinking tokens, over every pair of points (> 0: more thinking helps).
- Performance: the best accuracy of the sweep.

    from nanochat.tts import run_problems, sweep_point, scaling, performance
    records = run_problems(engine, tokenizer, task, range(100), num_samples=1, max_think_tokens=32)
    point = sweep_point(records)          # accuracy, mean thinking tokens, control, majority accuracy, ...

Also s1K-style curation (section 2 of the paper): `trace_problem` (quality: is a thinking trace well formed)
and `s1_select` (diversity: uniform over families, longer traces favoured).

Used by scripts/chat_tts.py (the sweeps and the plot) and scripts/s1_curate.py (the curation).
Tests: python -m pytest tests/test_tts.py -q
"""
import re
from collections import Counter
from itertools import combinations

from nanochat.calculator import calculate
from tasks.verify import extract_answer, numbers_equal

# -----------------------------------------------------------------------------
# counting thinking tokens, majority vote


def thinking_tokens(tokens, think_start, think_end):
    """
    Tokens inside thinking spans (the start/end markers not counted; a "Wait" the engine forced counts, it is
    thinking the model then continues). An unterminated span runs to the end of `tokens`.
    """
    count, inside = 0, False
    for t in tokens:
        if t == think_start and not inside:
            inside = True
        elif t == think_end and inside:
            inside = False
        elif inside:
            count += 1
    return count


def majority_vote(answers):
    """
    The most common answer, ignoring None (no answer found); a tie goes to the answer seen first, so the
    result is deterministic and a single sample votes for itself. None when no sample gave an answer.
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


# -----------------------------------------------------------------------------
# s1's metrics over a sweep: points are (mean thinking tokens, accuracy), one per budget setting


def control(think_counts, min_tokens=None, max_tokens=None):
    """Fraction of runs whose thinking-token count lies in [min_tokens, max_tokens] (None: no bound that side)."""
    if not think_counts:
        raise ValueError("control needs at least one run")
    ok = [(min_tokens is None or c >= min_tokens) and (max_tokens is None or c <= max_tokens) for c in think_counts]
    return sum(ok) / len(ok)


def scaling(points):
    """
    s1's Scaling: the mean of (f(b) - f(a)) / (b - a) over every pair of points a < b (x = thinking tokens,
    y = accuracy): the average slope of the piecewise-linear accuracy curve, weighting all pairs equally.
    Pairs with the same x are skipped (no slope). None when fewer than two distinct x.
    """
    pts = sorted(points)
    slopes = [(yb - ya) / (xb - xa) for (xa, ya), (xb, yb) in combinations(pts, 2) if xb > xa]
    return sum(slopes) / len(slopes) if slopes else None


def performance(points):
    """s1's Performance: the best accuracy over the sweep."""
    if not points:
        raise ValueError("performance needs at least one point")
    return max(y for _, y in points)


# -----------------------------------------------------------------------------
# running a task under a budget


def think_prompt(tokenizer, conversation, force_think=True):
    """
    (prompt ids, length of the prompt without the thinking opener). With force_think the prompt ends with
    `<|think_start|>` so every sample thinks (s1 starts the thinking for the model too) and the engine's
    budgets apply from the first token.
    """
    prompt = tokenizer.render_for_completion(conversation)
    base = len(prompt)
    if force_think:
        prompt = prompt + [tokenizer.encode_special("<|think_start|>")]
    return prompt, base


def run_problems(engine, tokenizer, task, indices, num_samples=1, max_new_tokens=256, temperature=0.0,
                 top_k=None, seed=0, force_think=True, **budget):
    """
    Sample every problem of `task` at `indices` and score it. `budget` goes to Engine.generate
    (max_think_tokens, min_think_tokens, max_waits, wait_text, answer_prefix). Tools are off: the thinking
    variant does its arithmetic in prose. Returns one record per problem:
    {index, answer (gold), answers, correct (per sample), think (tokens per sample), voted, voted_correct}.
    """
    think_start = tokenizer.encode_special("<|think_start|>")
    think_end = tokenizer.encode_special("<|think_end|>")
    records = []
    for index in indices:
        conversation = task[index]
        prompt, base = think_prompt(tokenizer, conversation, force_think)
        rows, _ = engine.generate_batch(prompt, num_samples=num_samples, max_tokens=max_new_tokens,
                                        temperature=temperature, top_k=top_k, seed=seed + index, use_tools=False,
                                        **budget)
        completions = [row[base:] for row in rows]  # keeps the forced <|think_start|> so thinking is stripped
        answers = [extract_answer(tokenizer.decode(c)) for c in completions]
        gold = conversation["answer"]
        voted = majority_vote(answers)
        records.append(dict(index=index, answer=gold, answers=answers, correct=[int(a == gold) for a in answers],
                            think=[thinking_tokens(c, think_start, think_end) for c in completions],
                            voted=voted, voted_correct=int(voted is not None and voted == gold)))
    return records


def majority_at(records, n):
    """Accuracy of the majority vote over the first n samples of every record (parallel scaling from one run)."""
    if not records or any(len(r["answers"]) < n for r in records):
        raise ValueError(f"majority_at({n}) needs at least {n} samples per problem")
    return sum(majority_vote(r["answers"][:n]) == r["answer"] for r in records) / len(records)


def sweep_point(records, min_tokens=None, max_tokens=None):
    """One point of a sweep: accuracy over all samples, mean thinking tokens, Control against the budget asked."""
    think = [t for r in records for t in r["think"]]
    correct = [c for r in records for c in r["correct"]]
    return dict(accuracy=sum(correct) / len(correct), think_tokens=sum(think) / len(think),
                control=control(think, min_tokens, max_tokens), majority=sum(r["voted_correct"] for r in records) / len(records),
                n=len(records), samples=len(correct))


# -----------------------------------------------------------------------------
# s1K-style curation: quality and diversity (difficulty needs a model: scripts/s1_curate.py)

EQUATION_RE = re.compile(r"([0-9(][0-9+\-*/(). ]*[0-9)])\s*=\s*(-?[0-9][0-9.,]*[0-9]|-?[0-9])")  # "3*4 = 12"


def trace_problem(conversation):
    """
    Why a thinking conversation is malformed (one phrase), or None when it is fine: it needs a non-empty think
    part, a final `#### N` equal to conversation["answer"], and every "a op b = c" in the thinking right by the
    calculator (s1 dropped traces with formatting or API errors; here arithmetic slips are the analogue).
    """
    parts = conversation["messages"][-1]["content"]
    if isinstance(parts, str):
        return "no thinking"
    think = "".join(p["text"] for p in parts if p["type"] == "think")
    if not think.strip():
        return "no thinking"
    answer_text = "".join(p["text"] for p in parts if p["type"] == "text")
    if not numbers_equal(extract_answer(answer_text), conversation["answer"]):
        return "final answer missing or wrong"
    for expr, result in EQUATION_RE.findall(think):
        if not numbers_equal(calculate(expr), result):
            return f"wrong arithmetic {expr} = {result}"
    return None


def s1_select(families, lengths, candidates, size, rng):
    """
    s1's diversity sampling: until `size` items are chosen, draw a family uniformly at random among those with
    candidates left, then one of its items with weight 2^-rank, ranked by trace length, longest first (ties by
    index). families[i], lengths[i]: item i's family and thinking length; candidates: the item indices allowed.
    A family that runs out leaves the draw, so the others fill the rest.
    """
    if size > len(candidates):
        raise ValueError(f"asked for {size} items but only {len(candidates)} candidates")
    by_family = {}
    for i in candidates:
        by_family.setdefault(families[i], []).append(i)
    for items in by_family.values():
        items.sort(key=lambda i: (-lengths[i], i))
    chosen = []
    while len(chosen) < size:
        items = by_family[rng.choice(sorted(f for f in by_family if by_family[f]))]
        weights = [2.0 ** -r for r in range(len(items))]
        chosen.append(items.pop(rng.choices(range(len(items)), weights=weights)[0]))
    return chosen
