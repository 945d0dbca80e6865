"""
Critique data for CFT, critique fine-tuning (Wang et al., arXiv 2501.17703): instead of imitating a correct
answer, the model learns to critique a (question, candidate solution) pair, step by step, ending with a verdict.

This file holds the data side, for GSM8K-style solutions (`expr = <<expr=result>>result` steps, `#### N`):
- corruptions of a gold solution, each a typical mistake: a wrong step result, an error propagated through
  the later steps, a wrong operation (propagated too), a wrong final line;
- a rule-based critic that checks every calculator step against the calculator and the gold solutions
  ("Step 2: 12*3 = 36 is correct." / "Step 2: 12*3 = 37 is wrong, it should be 12*3 = 36.") and ends with
  "Conclusion: right" or "Conclusion: wrong";
- the critique prompt, the parser of the conclusion, and a Task over (question, candidate) pairs whose
  evaluation is "did the model's conclusion match the critic's verdict" (the judge accuracy).
The sampling of candidates from a model and the training live in scripts/chat_cft.py.

When is a step correct? Its arithmetic must be true (checked with nanochat.calculator, never eval) and its
result must be a value that some valid solution order computes (conversation["solutions"] lists them all).
Values, not expressions, so that "3+5" and "5+3" are both right; a step built on an earlier wrong value
("propagated error") is wrong even though its own arithmetic is true. A solution is right when every step is
right and its final answer equals the gold answer.

    python -m tasks.critique -n 3          # print corrupted candidates and their critiques
    python -m pytest tests/test_critique.py -q
"""
import argparse
import random
import re

from nanochat.calculator import calculate
from tasks.common import Task, chat
from tasks.verify import extract_equations, join_steps, normalize_number, split_steps

CORRUPTIONS = ("wrong_result", "propagated", "wrong_operation", "wrong_final")

# -----------------------------------------------------------------------------
# model samples -> solutions in the annotated text form

TOOL_CALL_RE = re.compile(r"<\|python_start\|>(.*?)<\|python_end\|>\s*<\|output_start\|>(.*?)<\|output_end\|>", re.DOTALL)
SPECIAL_RE = re.compile(r"<\|[a-z_]+\|>")
NUMBER_RE = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+)?(?![0-9.])")


def completion_to_solution(text):
    """
    A decoded assistant turn as a GSM8K-style solution: each tool call and its output become `<<expr=result>>`
    (the inverse of verify.annotations_to_parts); any other special token (a call without output) is dropped.
    """
    text = TOOL_CALL_RE.sub(lambda m: f"<<{m.group(1).strip()}={m.group(2).strip()}>>", text)
    return SPECIAL_RE.sub("", text).strip()


# -----------------------------------------------------------------------------
# corruptions of a gold solution


def _set_equation(line, expr, result, new_expr, new_result):
    """`line` with its step `expr = <<expr=result>>result` rewritten (GSM8K writes every step in that shape)."""
    old, new = f"{expr} = <<{expr}={result}>>{result}", f"{new_expr} = <<{new_expr}={new_result}>>{new_result}"
    if old in line:
        return line.replace(old, new, 1)
    return line.replace(f"<<{expr}={result}>>", f"<<{new_expr}={new_result}>>", 1)


def _wrong_number(value, rng):
    """A plausible wrong value for a correct result string: off by a little, by ten, or a digit slip."""
    v = int(float(value))
    options = {v + d for d in (-2, -1, 1, 2, 10, -10)} | {v * 10, int(str(v)[::-1]) if v >= 10 else v + 3}
    options = sorted(o for o in options if o >= 0 and o != v)
    return str(rng.choice(options))


def _propagate(steps, k, changes):
    """
    Redo the steps after step k: every number in a later expression that was the result of a changed step
    takes its new value and the arithmetic is recomputed (a consistent solution built on the mistake).
    `changes` maps old result strings to new ones and grows as results change. Returns False if a step
    cannot be recomputed (e.g. a division that stops being exact).
    """
    for step in steps[k + 1:]:
        for expr, result in list(step["equations"]):
            new_expr = NUMBER_RE.sub(lambda m: changes.get(m.group(0), m.group(0)), expr)
            if new_expr == expr:
                continue
            new_result = calculate(new_expr)
            if new_result is None or "." in new_result or new_result.startswith("-"):
                return False
            step["line"] = _set_equation(step["line"], expr, result, new_expr, new_result)
            changes[result] = new_result
        step["equations"] = extract_equations(step["line"])
    return True


def _other_operation(expr, rng):
    """`expr` with one of its operators replaced by another, keeping a non-negative whole result, or None."""
    ops = [m.start() for m in re.finditer(r"[-+*/]", expr)]
    rng.shuffle(ops)
    for i in ops:
        for op in rng.sample("+-*", 3):
            if op == expr[i]:
                continue
            new_expr = expr[:i] + op + expr[i + 1:]
            value = calculate(new_expr)
            if value is not None and "." not in value and not value.startswith("-") and value != calculate(expr):
                return new_expr, value
    return None


def corrupt(solution, kind, rng):
    """
    A corrupted copy of a gold solution string, or None when this solution cannot take that corruption.
      wrong_result:    one step's result is wrong; later steps go on from the right value (a slip)
      propagated:      one step's result is wrong and every later step and the answer build on it
      wrong_operation: one step uses the wrong operator (true arithmetic), propagated to the answer
      wrong_final:     every step right, the `#### N` line wrong
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; choose from {', '.join(CORRUPTIONS)}")
    steps, answer = split_steps(solution)
    if answer is None:
        return None
    if kind == "wrong_final":
        return join_steps(steps, _wrong_number(answer, rng))
    with_eq = [i for i, s in enumerate(steps) if s["equations"]]
    if not with_eq:
        return None
    k = rng.choice(with_eq)
    expr, result = steps[k]["equations"][0]
    if kind == "wrong_operation":
        other = _other_operation(expr, rng)
        if other is None:
            return None
        new_expr, new_result = other
    else:
        new_expr, new_result = expr, _wrong_number(result, rng)
    steps[k]["line"] = _set_equation(steps[k]["line"], expr, result, new_expr, new_result)
    steps[k]["equations"] = extract_equations(steps[k]["line"])
    if kind == "wrong_result":
        return join_steps(steps, answer)
    changes = {result: new_result}
    if not _propagate(steps, k, changes):
        return None
    return join_steps(steps, normalize_number(changes.get(answer, answer)))


# -----------------------------------------------------------------------------
# the rule-based critic


def _gold_orders(conversation):
    """Per valid solution order, its steps as (expr, normalized result) pairs."""
    orders = []
    for sol in conversation["solutions"]:
        steps, _ = split_steps(sol)
        orders.append([(e, normalize_number(r)) for s in steps for e, r in s["equations"]])
    return orders


def critique(conversation, candidate):
    """
    (critique text, verdict) of a candidate solution string for a conversation carrying "solutions" (every
    valid step order) and "answer". verdict is True when every step and the final answer are right.
    """
    orders = _gold_orders(conversation)
    gold_values = {r for order in orders for _, r in order}
    steps, answer = split_steps(candidate)
    equations = [eq for s in steps for eq in s["equations"]]
    values = [normalize_number(r) for _, r in equations]
    # the order the candidate follows most closely gives the "it should be" of a wrong step
    best = max(orders, key=lambda order: sum(v in {r for _, r in order} for v in values))
    lines, right = [], True
    for k, (expr, result) in enumerate(equations):
        true = calculate(expr)
        said = f"Step {k + 1}: {expr} = {result}"
        if true is not None and normalize_number(true) == normalize_number(result) and normalize_number(result) in gold_values:
            lines.append(f"{said} is correct.")
            continue
        right = False
        if true is not None and normalize_number(true) != normalize_number(result):
            lines.append(f"{said} is wrong, it should be {expr} = {true}.")
        elif k < len(best):
            lines.append(f"{said} is wrong, it should be {best[k][0]} = {best[k][1]}.")
        else:
            lines.append(f"{said} is wrong, it is not needed.")
    gold = conversation["answer"]
    if answer is None:
        right = False
        lines.append(f"There is no final answer, it should be {gold}.")
    elif answer == gold:
        lines.append(f"The final answer {answer} is correct.")
    else:
        right = False
        lines.append(f"The final answer {answer} is wrong, it should be {gold}.")
    lines.append(f"Conclusion: {'right' if right else 'wrong'}")
    return "\n".join(lines), right


CONCLUSION_RE = re.compile(r"Conclusion:\s*(right|wrong)\b", re.IGNORECASE)


def parse_conclusion(text):
    """True / False from the LAST 'Conclusion: right|wrong' of a critique, None when there is none."""
    found = CONCLUSION_RE.findall(text)
    return found[-1].lower() == "right" if found else None


# -----------------------------------------------------------------------------
# critique conversations and the judge task


def critique_prompt(question, candidate):
    """The user turn of a critique: the problem and the candidate, annotations kept (they are the steps)."""
    return f"Check this solution step by step.\nProblem: {question}\nSolution:\n{candidate}"


def critique_conversation(question, candidate, critique_text, verdict, **extra):
    return chat(critique_prompt(question, candidate), critique_text, verdict=verdict, **extra)


class ConversationList(Task):
    """A Task over a list of ready-made conversations (the recipes' generated data); `judge` scores verdicts."""

    name = "ConversationList"

    def __init__(self, conversations, name=None, **kwargs):
        super().__init__(**kwargs)
        self.conversations = list(conversations)
        self.name = name or self.name

    def num_examples(self):
        return len(self.conversations)

    def get_example(self, index):
        return dict(self.conversations[index])

    def evaluate(self, conversation, completion):
        """For critique conversations: is the completion's conclusion the critic's verdict? (None = wrong)"""
        return parse_conclusion(completion) == conversation["verdict"]


if __name__ == "__main__":
    from tasks.synthmath import SynthMath
    parser = argparse.ArgumentParser(description="Print corrupted SynthMath solutions and their critiques")
    parser.add_argument("-n", type=int, default=2, help="how many problems")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruptions")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    task = SynthMath("train", min_steps=2, max_steps=3)
    for i in range(args.n):
        conv = task[i]
        print(f"=== {conv['messages'][0]['content']}")
        for kind in ("gold",) + CORRUPTIONS:
            cand = conv["solutions"][0] if kind == "gold" else corrupt(conv["solutions"][0], kind, rng)
            if cand is None:
                continue
            text, verdict = critique(conv, cand)
            print(f"--- {kind}\n{cand}\n>>> {text}\n")
