"""
Multiple-choice practice: synthetic A/B/C/D questions whose answers are known by construction, to teach the
format ("answer with the letter") before the model meets ARC and MMLU. Rendered by tasks/common.py:render_mc,
the same function the real MC tasks use, and scored the same way (categorical).

Kinds: arithmetic (what is a op b), extremes (largest / smallest of four numbers), categories (which one is a
fruit, an animal, ...), first letters (which word starts with X). The gold letter is uniform over A-D.
Train and test use disjoint question templates and disjoint number ranges (train [2, max_number], test
[max_number + 1, 2 * max_number]); the category words are shared (see tasks/synthmath.py for why).

    python -m tasks.mcq                   # print a few questions
"""
import random

from tasks.common import Task, evaluate_mc, render_mc

CATEGORIES = {
    "fruit": "apple banana cherry mango pear plum grape lemon peach kiwi".split(),
    "animal": "dog cat horse tiger rabbit eagle salmon frog sheep whale".split(),
    "color": "red blue green yellow purple orange pink brown black white".split(),
    "vehicle": "car bus bicycle train truck boat airplane scooter tram motorcycle".split(),
    "tool": "hammer wrench saw drill screwdriver shovel pliers chisel rake ladder".split(),
}
TEMPLATES = {
    "arithmetic": {"train": ["What is {a} {op} {b}?", "Compute {a} {op} {b}."], "test": ["Which value equals {a} {op} {b}?"]},
    "largest": {"train": ["Which number is the largest?"], "test": ["Pick the biggest of these numbers."]},
    "smallest": {"train": ["Which number is the smallest?"], "test": ["Pick the lowest of these numbers."]},
    "category": {"train": ["Which of these is a {cat}?", "Which one is a kind of {cat}?"], "test": ["Choose the {cat} from the list."]},
    "letter": {"train": ["Which word starts with the letter {x}?"], "test": ["Find the word whose first letter is {x}."]},
}


class MCQ(Task):
    eval_type = "categorical"
    name = "MCQ"

    def __init__(self, split="train", size=20_000, seed=0, max_number=50, **kwargs):
        super().__init__(**kwargs)
        if split not in ("train", "test"):
            raise ValueError(f"MCQ split {split!r}: expected 'train' or 'test'")
        self.split, self.size, self.seed = split, size, seed
        self.lo, self.hi = (2, max_number) if split == "train" else (max_number + 1, 2 * max_number)

    def num_examples(self):
        return self.size

    def get_example(self, index):
        rng = random.Random(f"mcq-{self.seed}-{self.split}-{index}")
        kind = rng.choice(sorted(TEMPLATES))
        template = rng.choice(TEMPLATES[kind][self.split])
        question, correct, wrong, numbers = getattr(self, f"_{kind}")(rng, template)
        choices = [correct] + wrong
        rng.shuffle(choices)
        return render_mc(question, [str(c) for c in choices], choices.index(correct), kind=kind, numbers=numbers)

    # each kind: (question, correct choice, three wrong choices, input numbers drawn)

    def _numbers(self, rng, k):
        return rng.sample(range(self.lo, self.hi + 1), k)

    def _arithmetic(self, rng, template):
        a, b = self._numbers(rng, 2)
        op = rng.choice("+-*")
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        wrong = set()
        for delta in rng.sample([-10, -2, -1, 1, 2, 10, 11, -11], 8):  # near misses, like real arithmetic slips
            if len(wrong) < 3 and value + delta != value:
                wrong.add(value + delta)
        return template.format(a=a, b=b, op=op), value, sorted(wrong), [a, b]

    def _largest(self, rng, template):
        nums = self._numbers(rng, 4)
        return template, max(nums), [n for n in nums if n != max(nums)], nums

    def _smallest(self, rng, template):
        nums = self._numbers(rng, 4)
        return template, min(nums), [n for n in nums if n != min(nums)], nums

    def _category(self, rng, template):
        cat, *others = rng.sample(sorted(CATEGORIES), 4)
        return template.format(cat=cat), rng.choice(CATEGORIES[cat]), [rng.choice(CATEGORIES[o]) for o in others], []

    def _letter(self, rng, template):
        words = [w for ws in CATEGORIES.values() for w in ws]
        while True:
            picks = rng.sample(words, 4)
            if len({w[0] for w in picks}) == 4:  # unambiguous: the four first letters differ
                return template.format(x=picks[0][0].upper()), picks[0], picks[1:], []

    def evaluate(self, conversation, completion):
        return evaluate_mc(conversation, completion)


if __name__ == "__main__":
    task = MCQ("train")
    for i in range(4):
        conv = task[i]
        print(conv["messages"][0]["content"], "->", conv["answer"], "\n")
