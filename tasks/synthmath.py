"""
SynthMath: GSM8K-shaped word problems generated from a seed, unlimited, with exact answers.

Item i of a split is a pure function of (seed, split, i). Each problem comes from a family (inventory,
shopping, earnings, sharing) with 1-4 calculator steps written `<<expr=result>>` and a final `#### N`,
rendered exactly like GSM8K (tasks/gsm8k.py: the annotations become python tool calls). Every family has
several valid step orders: the rendered solution uses one at random, and `conversation["solutions"]` lists
them all (RFT and RL want diverse correct answers; CFT gets `steps` to corrupt).

Train and held-out ("test") splits never share a question template, and their input numbers come from
disjoint ranges: train draws from [2, max_number], test from [max_number + 1, 2 * max_number]. Names and
objects are shared between the splits by default: a pilot showed held-out errors came mostly from names and
objects the training prompts never showed, which measures vocabulary, not arithmetic. `shared_vocab=False`
splits them too (even-indexed words train, odd-indexed words test) for a stricter held-out set.

`think=True` gives the s1-style variant (arXiv 2501.19393): the assistant first thinks (the solution as
prose, no tool calls) inside a think part, then answers with a short text part ending in `#### N`.
`tools=False` keeps the `<<expr=result>>` annotations in the text instead of turning them into calculator
calls: the model learns to write every result itself (RFT samples with the tool off, arXiv 2308.01825).

    python -m tasks.synthmath --split test --steps 3 -n 3     # print a few problems
"""
import argparse
import random

from nanochat.calculator import calculate
from tasks.common import Task, chat
from tasks.gsm8k import evaluate_math, gsm8k_conversation
from tasks.verify import split_steps, strip_annotations

NAMES = (
    "Ava Ben Chloe Diego Emma Farid Grace Hiro Isla Jamal Kira Liam Maya Noah Olga Pablo Quinn Rosa Sami Tara "
    "Umar Vera Wen Xavier Yara Zane Amara Bruno Celia Dmitri Elif Femi Greta Hana Ivan Jia Kofi Lena Mateo Nia"
).split()
# (singular, plural, unit price range for shopping in dollars)
OBJECTS = [
    ("apple", "apples"), ("marble", "marbles"), ("sticker", "stickers"), ("book", "books"), ("pencil", "pencils"),
    ("cookie", "cookies"), ("shell", "shells"), ("card", "cards"), ("toy car", "toy cars"), ("balloon", "balloons"),
    ("cupcake", "cupcakes"), ("notebook", "notebooks"), ("orange", "oranges"), ("stamp", "stamps"),
    ("puzzle", "puzzles"), ("candle", "candles"), ("flower", "flowers"), ("ticket", "tickets"),
]
SPLITS = ("train", "test")

# -----------------------------------------------------------------------------
# question templates, disjoint between splits (the step lines of the solutions are shared)

TEMPLATES = {
    "inventory": {
        "train": ["{name} has {a} {objs}. {events} How many {objs} does {name} have now?",
                  "There are {a} {objs} in {name}'s box. {events} How many {objs} are in the box at the end?"],
        "test": ["At first, {name} owned {a} {objs}. {events} What is the number of {objs} {name} ends up with?"],
    },
    "inventory_gain": {"train": ["Then {name} gets {k} more.", "Next, {name} buys {k} more {objs}."],
                       "test": ["After that, {name} picks up another {k}."]},
    "inventory_loss": {"train": ["Then {name} gives {k} to a friend.", "{name} loses {k} of them."],
                       "test": ["Later, {k} of them get lost."]},
    "shopping": {
        "train": ["{name} buys {items}. {pay}How much {what}?",
                  "At the store, {name} picks {items}. {pay}How much {what}?"],
        "test": ["For a party, {name} orders {items}. {pay}Then answer: how much {what}?"],
    },
    "earnings": {
        "train": ["{name} earns ${r} an hour and works {h} hours a day. {rest}",
                  "{name} is paid ${r} for every hour of work and works {h} hours each day. {rest}"],
        "test": ["Each day {name} spends {h} hours at a job paying ${r} per hour. {rest}"],
    },
    "sharing": {
        "train": ["{name} shares {t} {objs} equally among {k} friends. {rest}",
                  "{t} {objs} are split evenly between {k} kids. {rest}"],
        "test": ["A teacher hands out {t} {objs} so that each of {k} students gets the same number. {rest}"],
    },
}


def count_templates(split):
    """All question-template strings of a split (the disjointness test compares these sets)."""
    return {t for family in TEMPLATES.values() for t in family[split]}


# -----------------------------------------------------------------------------
# the families: each returns (question, [alternative solutions], answer, numbers drawn)
# a solution is a list of lines; `eq(expr)` writes one calculator step the way GSM8K does: "a*b = <<a*b=c>>c"


def eq(expr):
    result = calculate(expr)
    return f"{expr} = <<{expr}={result}>>{result}", int(result)


def inventory(rng, draw, steps, name, obj):
    objs = obj[1]
    a = draw()
    events, total = [], a
    for _ in range(steps):
        k = draw()
        kind = "loss" if (k < total and rng.random() < 0.5) else "gain"
        events.append((kind, k))
        total += k if kind == "gain" else -k
    sentences = [rng.choice(TEMPLATES[f"inventory_{kind}"][rng.split]).format(name=name, k=k, objs=objs) for kind, k in events]
    question = rng.choice(TEMPLATES["inventory"][rng.split]).format(name=name, a=a, objs=objs, events=" ".join(sentences))
    # order 1: follow the story, a running total
    running, cur = [], a
    for kind, k in events:
        line, cur = eq(f"{cur}{'+' if kind == 'gain' else '-'}{k}")
        running.append(f"After that there are {line} {objs}.")
    solutions = [running]
    gains = [k for kind, k in events if kind == "gain"]
    losses = [k for kind, k in events if kind == "loss"]
    if gains and losses and steps >= 2:  # order 2: all gains first, then all losses at once
        lines, cur = [], a
        line, cur = eq("+".join(map(str, [a] + gains)))
        lines.append(f"Adding everything {name} got: {line} {objs}.")
        line, cur = eq(f"{cur}-" + "-".join(map(str, losses)))
        lines.append(f"Taking away what went: {line} {objs}.")
        solutions.append(lines)
    return question, solutions, total, [a] + [k for _, k in events]


def shopping(rng, draw, steps, name, obj):
    n_items = 1 if steps <= 2 else 2
    with_change = steps in (2, 4)
    objects = rng.sample(OBJECTS, n_items)
    quantities = [draw() for _ in objects]
    prices = [draw() for _ in objects]
    items = " and ".join(f"{q} {o[1]} at ${p} each" for q, o, p in zip(quantities, objects, prices))
    total = sum(q * p for q, p in zip(quantities, prices))
    extra = draw() if with_change else 0
    budget = total + extra
    pay = f"{name} pays with ${budget}. " if with_change else ""
    what = "change does " + name + " get" if with_change else "does " + name + " spend"
    question = rng.choice(TEMPLATES["shopping"][rng.split]).format(name=name, items=items, pay=pay, what=what)
    solutions = []
    for order in ([0, 1], [1, 0]) if n_items == 2 else ([0],):  # the items can be priced in either order
        lines, costs = [], []
        for i in order:
            line, cost = eq(f"{quantities[i]}*{prices[i]}")
            lines.append(f"The {objects[i][1]} cost {line} dollars.")
            costs.append(cost)
        if n_items == 2:
            line, _ = eq(f"{costs[0]}+{costs[1]}")
            lines.append(f"Altogether that is {line} dollars.")
        if with_change:
            line, _ = eq(f"{budget}-{total}")
            lines.append(f"The change is {line} dollars.")
        solutions.append(lines)
        if with_change and n_items == 2:  # or subtract each cost from the money in turn
            alt = lines[:2]
            line, left = eq(f"{budget}-{costs[0]}")
            alt.append(f"After the first purchase {name} has {line} dollars.")
            line, _ = eq(f"{left}-{costs[1]}")
            alt.append(f"After the second, {line} dollars are left.")
            solutions.append(alt)
    answer = extra if with_change else total
    return question, solutions, answer, quantities + prices + ([extra] if with_change else [])


def earnings(rng, draw, steps, name, obj):
    r, h = draw(), draw()
    d = draw() if steps >= 2 else None
    spend = draw() if steps >= 3 else None
    weeks = draw() if steps >= 4 else None
    # spending more than was earned would make a negative answer; such a draw becomes a bonus instead
    sign = "-" if spend is None or spend < r * h * d else "+"
    spent = {"-": "spending", "+": "getting a bonus of"}[sign]
    if steps == 1:
        rest = f"How much does {name} earn in one day?"
    elif steps == 2:
        rest = f"How much does {name} earn in {d} days?"
    elif steps == 3:
        rest = f"Over {d} days, how much does {name} have after {spent} ${spend}?"
    else:
        rest = f"{name} works {d} days a week, {spent} ${spend} each week. How much does {name} have after {weeks} weeks?"
    question = rng.choice(TEMPLATES["earnings"][rng.split]).format(name=name, r=r, h=h, rest=rest)
    solutions = []
    for first in ("rate", "hours"):  # (r*h)*d or (h*d)*r: two valid groupings
        if steps == 1 and first == "hours":
            break
        lines = []
        if first == "rate":
            line, v = eq(f"{r}*{h}")
            lines.append(f"In a day {name} earns {line} dollars.")
            if d is not None:
                line, v = eq(f"{v}*{d}")
                lines.append(f"Over {d} days that is {line} dollars.")
        else:
            line, hours = eq(f"{h}*{d}")
            lines.append(f"{name} works {line} hours.")
            line, v = eq(f"{hours}*{r}")
            lines.append(f"That pays {line} dollars.")
        if spend is not None:
            line, v = eq(f"{v}{sign}{spend}")
            lines.append(f"With the {'spending' if sign == '-' else 'bonus'} that is {line} dollars.")
        if weeks is not None:
            line, v = eq(f"{v}*{weeks}")
            lines.append(f"In {weeks} weeks {name} saves {line} dollars.")
        solutions.append(lines)
    answer = r * h * (d or 1) + (spend or 0) * (1 if sign == "+" else -1)
    answer = answer * weeks if weeks is not None else answer
    return question, solutions, answer, [x for x in (r, h, d, spend, weeks) if x is not None]


def sharing(rng, draw, steps, name, obj):
    objs = obj[1]
    k, each = draw(), draw()
    t = k * each  # built backwards so the division is exact
    eaten = draw() if steps >= 2 else None
    if eaten is not None and eaten >= each:
        eaten, each, t = each, eaten, k * eaten  # swap so that something is left
    extra = draw() if steps >= 3 else None
    if steps == 1:
        rest = f"How many {objs} does each one get?"
    else:
        rest = f"Each one then uses {eaten} of them. How many {objs} does each one have left?"
        if steps >= 3:
            rest = rest.replace("How many", f"Then each gets {extra} more. How many")
    question = rng.choice(TEMPLATES["sharing"][rng.split]).format(name=name, t=t, k=k, objs=objs, rest=rest)
    lines = []
    line, v = eq(f"{t}/{k}")
    lines.append(f"Each one gets {line} {objs}.")
    solutions = [lines]
    if eaten is not None:
        line, v = eq(f"{v}-{eaten}")
        solutions = [lines + [f"After using some, each has {line} {objs}."]]
        if extra is not None:
            line_a, _ = eq(f"{v}+{extra}")
            first = solutions[0] + [f"With the extra ones, each has {line_a} {objs}."]
            line_b, w = eq(f"{each}+{extra}")  # or add the gift before taking the used ones away
            line_c, _ = eq(f"{w}-{eaten}")
            second = lines + [f"With the extra ones each would have {line_b}.", f"Minus the used ones: {line_c} {objs}."]
            solutions = [first, second]
    answer = each - (eaten or 0) + (extra or 0)
    return question, solutions, answer, [k, each] + [x for x in (eaten, extra) if x is not None]


FAMILIES = {"inventory": (inventory, (1, 4)), "shopping": (shopping, (1, 4)), "earnings": (earnings, (1, 4)), "sharing": (sharing, (1, 3))}

# -----------------------------------------------------------------------------


class SplitRandom(random.Random):
    """A Random that also knows which split it draws for (the templates depend on it)."""

    def __init__(self, seed, split):
        super().__init__(seed)
        self.split = split


def args_error(min_steps=1, max_steps=4, max_number=50):
    """What is wrong with these SynthMath settings, or None. Scripts ask it right after parsing --min-steps,
    --max-steps (and --max-number), so a bad value is a usage error, not a traceback from deep in a run."""
    if not 1 <= min_steps <= max_steps <= 4:
        return f"steps {min_steps}..{max_steps}: need 1 <= min_steps <= max_steps <= 4"
    if max_number < 5:
        return f"max_number={max_number}: use at least 5 so that problems can be built"
    return None


class SynthMath(Task):
    eval_type = "generative"
    name = "SynthMath"

    def __init__(self, split="train", size=100_000, seed=0, min_steps=1, max_steps=4, max_number=50,
                 families=None, shared_vocab=True, think=False, tools=True, **kwargs):
        super().__init__(**kwargs)
        if split not in SPLITS:
            raise ValueError(f"SynthMath split {split!r}: expected 'train' or 'test'")
        error = args_error(min_steps, max_steps, max_number)
        if error:
            raise ValueError(error)
        self.families = list(families or FAMILIES)
        unknown = set(self.families) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown SynthMath families {sorted(unknown)}; choose from {sorted(FAMILIES)}")
        self.split, self.size, self.seed, self.think, self.tools = split, size, seed, think, tools
        self.min_steps, self.max_steps, self.max_number = min_steps, max_steps, max_number
        parity = SPLITS.index(split)
        self.names = NAMES if shared_vocab else NAMES[parity::2]
        self.objects = OBJECTS if shared_vocab else OBJECTS[parity::2]
        self.lo, self.hi = (2, max_number) if split == "train" else (max_number + 1, 2 * max_number)

    def num_examples(self):
        return self.size

    def generate(self, index):
        """(question, solutions, answer, numbers, family) of item `index`: a pure function of (seed, split, index)."""
        rng = SplitRandom(f"synthmath-{self.seed}-{self.split}-{index}", self.split)
        family = rng.choice(self.families)
        fn, (smin, smax) = FAMILIES[family]
        steps = rng.randint(max(self.min_steps, smin), max(min(self.max_steps, smax), max(self.min_steps, smin)))
        draw = lambda: rng.randint(self.lo, self.hi)  # noqa: E731  every input number comes from the split's range
        question, solutions, answer, numbers = fn(rng, draw, steps, rng.choice(self.names), rng.choice(self.objects))
        return question, ["\n".join(s + [f"#### {answer}"]) for s in solutions], answer, numbers, family

    def get_example(self, index):
        question, solutions, answer, numbers, family = self.generate(index)
        solution = solutions[index % len(solutions)]  # spread the step orders evenly over the data
        extra = dict(solutions=solutions, numbers=numbers, family=family, id=f"{self.split}-{self.seed}-{index}")
        if not self.think:
            return gsm8k_conversation(question, solution, tools=self.tools, **extra)
        steps, answer_str = split_steps(solution)
        thinking = strip_annotations("\n".join(s["line"] for s in steps))
        parts = [{"type": "think", "text": thinking}, {"type": "text", "text": f"The answer is {answer_str}.\n#### {answer_str}"}]
        return chat(question, parts, answer=answer_str, steps=steps, **extra)

    def evaluate(self, conversation, completion):
        return evaluate_math(conversation, completion)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print a few SynthMath problems and their solutions")
    parser.add_argument("--split", default="train", choices=SPLITS, help="which split to draw from")
    parser.add_argument("--steps", type=int, default=0, help="exact number of steps (0 = any of 1-4)")
    parser.add_argument("--max-number", type=int, default=50, help="largest input number of the train split")
    parser.add_argument("--think", action="store_true", help="the thinking variant (think part, then the answer)")
    parser.add_argument("-n", type=int, default=4, help="how many problems to print")
    args = parser.parse_args()
    lo, hi = (args.steps, args.steps) if args.steps else (1, 4)
    task = SynthMath(args.split, min_steps=lo, max_steps=hi, max_number=args.max_number, think=args.think)
    for i in range(args.n):
        conv = task[i]
        print(f"--- {conv['family']} ({len(conv['solutions'])} orders)\nQ: {conv['messages'][0]['content']}")
        print(conv["solutions"][i % len(conv["solutions"])] if not args.think else conv["messages"][1]["content"])
