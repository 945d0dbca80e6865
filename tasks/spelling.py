"""
Spelling and letter counting: "How many r's are in strawberry?", a task that rewards tool use.

A tokenizer sees "strawberry" as one or two tokens, so a small model cannot count its letters by looking;
the gold answer spells the word out letter by letter, counts along, then checks with the calculator tool
(`"strawberry".count("r")`, which nanochat/calculator.py allows) and ends with `#### N`.
Reward: 1.0 for a right count that used the tool, `1 - tool_bonus` for a right count without it, else 0.

Splits: train and test differ in question templates; the words are shared by default (the lesson from
synthmath: held-out errors should measure the skill, not unseen vocabulary); `shared_vocab=False` splits
the word list (even-indexed words train, odd-indexed test). A "spell" mode asks only for the spelling.

    python -m tasks.spelling              # print a few items
"""
import random

from nanochat.calculator import calculate
from tasks.common import Task, chat
from tasks.verify import extract_answer, strip_thinking, used_tool

WORDS = (
    "strawberry banana apple raspberry mississippi bookkeeper committee balloon coffee letter address "
    "necessary occasion parallel millennium embarrass accommodate tomorrow different beginning government "
    "environment restaurant library chocolate elephant giraffe hippopotamus kangaroo penguin butterfly "
    "caterpillar crocodile alligator squirrel mosquito tomato potato cucumber broccoli pineapple watermelon "
    "blueberry cherry lemonade sandwich spaghetti cinnamon vanilla pepper mustard umbrella scissors keyboard "
    "computer telephone television calendar Wednesday February rhythm pizzazz bubble puzzle jazz fizz "
    "assessment possession successful mississauga tennessee connecticut massachusetts referee coffee "
    "engineering volunteer mountain river ocean island volcano desert forest meadow garden blossom sunflower "
    "dandelion lollipop marshmallow popcorn pretzel noodle dumpling avocado banana papaya apricot persimmon "
    "grammar syllable alphabet vocabulary dictionary sentence paragraph essay science history geography"
).split()
WORDS = list(dict.fromkeys(WORDS))  # drop repeats, keep order

TEMPLATES = {
    "count": {
        "train": ["How many {l}'s are in the word {w}?", "How many times does the letter {l} appear in \"{w}\"?",
                  "Count the letter {l} in {w}."],
        "test": ["In the word \"{w}\", what is the number of {l}'s?", "Tell me how often {l} occurs in {w}."],
    },
    "spell": {
        "train": ["Spell the word {w}.", "How do you spell {w}?"],
        "test": ["Please spell out {w} letter by letter."],
    },
}


def count_solution(word, letter):
    """Assistant parts: spell with a running count, then check with the tool, then `#### N`."""
    lowered, running, spelled = word.lower(), 0, []
    for ch in lowered:
        if ch == letter:
            running += 1
            spelled.append(f"{ch} ({running})")
        else:
            spelled.append(ch)
    expr = f'"{lowered}".count("{letter}")'
    result = calculate(expr)
    assert result == str(running), (expr, result, running)  # the tool and the hand count must agree
    return [
        {"type": "text", "text": f"Spelling {word}: {', '.join(spelled)}. That is {running} by hand. Checking with Python: "},
        {"type": "python", "text": expr},
        {"type": "python_output", "text": result},
        {"type": "text", "text": f"\nThe letter {letter} appears {running} time{'s' if running != 1 else ''} in {word}.\n#### {running}"},
    ]


class Spelling(Task):
    eval_type = "generative"
    name = "Spelling"

    def __init__(self, split="train", mode="count", size=20_000, seed=0, shared_vocab=True, tool_bonus=0.2, **kwargs):
        super().__init__(**kwargs)
        if split not in ("train", "test"):
            raise ValueError(f"Spelling split {split!r}: expected 'train' or 'test'")
        if mode not in TEMPLATES:
            raise ValueError(f"Spelling mode {mode!r}: expected 'count' or 'spell'")
        if not 0.0 <= tool_bonus <= 1.0:
            raise ValueError(f"tool_bonus={tool_bonus}: must be in [0, 1]")
        self.split, self.mode, self.size, self.seed, self.tool_bonus = split, mode, size, seed, tool_bonus
        self.words = WORDS if shared_vocab else WORDS[("train", "test").index(split)::2]

    def num_examples(self):
        return self.size

    def get_example(self, index):
        rng = random.Random(f"spelling-{self.mode}-{self.seed}-{self.split}-{index}")
        word = rng.choice(self.words)
        template = rng.choice(TEMPLATES[self.mode][self.split])
        if self.mode == "spell":
            return chat(template.format(w=word), f"{word} is spelled: {'-'.join(word.lower())}",
                        word=word, answer="-".join(word.lower()))
        # mostly letters that occur (the interesting case), sometimes one that does not (answer 0)
        letter = rng.choice(sorted(set(word.lower()))) if rng.random() < 0.85 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        return chat(template.format(l=letter, w=word), count_solution(word, letter),
                    word=word, letter=letter, answer=str(word.lower().count(letter)))

    def evaluate(self, conversation, completion):
        if self.mode == "spell":
            return conversation["answer"] in strip_thinking(completion)
        return extract_answer(completion) == conversation["answer"]

    def reward(self, conversation, completion):
        if not self.evaluate(conversation, completion):
            return 0.0
        if self.mode == "spell":
            return 1.0
        return 1.0 if used_tool(completion) else 1.0 - self.tool_bonus


if __name__ == "__main__":
    for mode in ("count", "spell"):
        task = Spelling("train", mode=mode)
        for i in range(3):
            print(task[i]["messages"])
