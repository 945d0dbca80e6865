"""
SynthIF: instruction following with verifiable constraints, in the spirit of IFEval (arXiv 2311.07911).

Each prompt asks for a short piece of writing on a topic under 1-3 constraints (lowercase only, include
word X, end with phrase Y, exactly N bullets, no commas, wrap in JSON, at most N words, start with word X).
Every constraint has a verifier function; the task's reward is the fraction of constraints satisfied and
`evaluate` is "all satisfied". Verifiers look at the visible text only: thinking and tool calls are
stripped first (tasks/verify.py:visible_text). The SFT responses are built programmatically so that they
satisfy their constraints (a test checks every generated response against its own verifiers).

A conversation stores its constraints as JSON-able dicts ({"kind": ..., "arg": ...}), so RL and DPO can
score any completion with `score_constraints(conversation["constraints"], completion)`.

Splits: train and test phrase every constraint with different templates and draw numeric arguments (bullet
counts, word limits) from disjoint ranges; topics and words to include are shared (see tasks/synthmath.py).

    python -m tasks.synthif               # print a few prompts and responses
"""
import json
import random

from tasks.common import Task, chat
from tasks.verify import visible_text

TOPICS = {
    "the ocean": ["The ocean covers most of our planet.", "Waves carry energy across great distances.",
                  "Many creatures live in the deep sea.", "Tides rise and fall twice a day."],
    "coffee": ["Coffee is brewed from roasted beans.", "Many people drink it in the morning.",
               "Its smell fills a kitchen quickly.", "Some prefer it with milk."],
    "bicycles": ["A bicycle turns leg power into speed.", "Riding to work saves money.",
                 "Good brakes keep riders safe.", "Chains need oil now and then."],
    "libraries": ["Libraries lend books for free.", "They are quiet places to study.",
                  "Librarians help people find answers.", "Many also lend music and films."],
    "rain": ["Rain waters the fields and gardens.", "Clouds release it when they grow heavy.",
             "Puddles form on the streets.", "Some people enjoy walking in it."],
    "music": ["Music can change a mood in seconds.", "Drums keep the rhythm steady.",
              "Learning an instrument takes patience.", "Songs help people remember words."],
    "gardening": ["Gardening starts with good soil.", "Seeds need water and light.",
                  "Weeds compete with young plants.", "Fresh vegetables taste better."],
    "the moon": ["The moon circles the Earth every month.", "Its light is reflected sunlight.",
                 "Astronauts first walked on it in 1969.", "Its pull shapes the tides."],
}
INCLUDE_WORDS = "bright quiet journey simple ancient gentle curious golden patient steady".split()
END_PHRASES = ["that is all", "thank you for reading", "the end", "see you soon"]

# -----------------------------------------------------------------------------
# verifiers: (text, arg) -> bool, on the visible text


def _words(text):
    return [w for w in text.replace("\n", " ").split(" ") if w.strip()]


def _bullets(text):
    return [line for line in text.splitlines() if line.lstrip().startswith(("- ", "* "))]


def _json_ok(text):
    t = text.strip()
    if t.startswith("```"):  # a fenced ```json block is fine too
        t = t.strip("`").removeprefix("json").strip()
    try:
        json.loads(t)
        return t.startswith(("{", "["))
    except ValueError:
        return False


VERIFIERS = {
    "lowercase": lambda text, arg: text == text.lower() and any(c.isalpha() for c in text),
    "include_word": lambda text, arg: arg.lower() in [w.strip(".,!?;:\"'()").lower() for w in _words(text)],
    "end_with": lambda text, arg: text.strip().rstrip(".!").lower().endswith(arg.lower()),
    "bullets": lambda text, arg: len(_bullets(text)) == arg,
    "no_commas": lambda text, arg: "," not in text,
    "json": lambda text, arg: _json_ok(text),
    "max_words": lambda text, arg: 0 < len(_words(text)) <= arg,
    "start_with": lambda text, arg: bool(_words(text)) and _words(text)[0].strip(".,!?;:\"'").lower() == arg.lower(),
}

# constraint phrasings per split (disjoint), and numeric argument ranges per split (disjoint)
PHRASES = {
    "lowercase": {"train": ["Use only lowercase letters.", "Write everything in lowercase."],
                  "test": ["Do not use any capital letters."]},
    "include_word": {"train": ["Include the word \"{arg}\".", "Make sure the word \"{arg}\" appears."],
                     "test": ["Your answer must contain the word \"{arg}\"."]},
    "end_with": {"train": ["End your response with the phrase \"{arg}\".", "Finish with the words \"{arg}\"."],
                 "test": ["The last words of your answer must be \"{arg}\"."]},
    "bullets": {"train": ["Answer with exactly {arg} bullet points (lines starting with \"- \").",
                          "Use exactly {arg} bullet points, each starting with \"- \"."],
                "test": ["Give precisely {arg} bullets, every one on its own line beginning with \"- \"."]},
    "no_commas": {"train": ["Do not use any commas.", "Avoid commas entirely."], "test": ["No commas are allowed."]},
    "json": {"train": ["Wrap your whole answer in JSON.", "Return your answer as a JSON object."],
             "test": ["Format the entire reply as valid JSON."]},
    "max_words": {"train": ["Use at most {arg} words.", "Keep it to {arg} words or fewer."],
                  "test": ["Your reply may not be longer than {arg} words."]},
    "start_with": {"train": ["Start your answer with the word \"{arg}\".", "Begin with the word \"{arg}\"."],
                   "test": ["The first word of your reply must be \"{arg}\"."]},
}
NUMERIC_RANGES = {"bullets": {"train": (2, 4), "test": (5, 6)}, "max_words": {"train": (30, 60), "test": (61, 90)}}
# pairs that cannot both hold (or that the response builder does not combine)
INCOMPATIBLE = {frozenset(p) for p in [("json", "bullets"), ("json", "end_with"), ("json", "start_with"),
                                       ("json", "lowercase"), ("bullets", "max_words"), ("bullets", "start_with"),
                                       ("end_with", "max_words")]}
USER_TEMPLATES = {"train": ["Write a few sentences about {topic}.", "Tell me something about {topic}."],
                  "test": ["Describe {topic} briefly."]}


def check_constraint(constraint, completion):
    """Does the completion satisfy one constraint ({"kind", "arg"})? Thinking and tool spans are ignored."""
    return bool(VERIFIERS[constraint["kind"]](visible_text(completion), constraint.get("arg")))


def score_constraints(constraints, completion):
    """Fraction of constraints satisfied (the reward; 1.0 means all)."""
    return sum(check_constraint(c, completion) for c in constraints) / len(constraints)


# -----------------------------------------------------------------------------
# building a response that satisfies its constraints


def build_response(topic, constraints, rng):
    """Text on `topic` that satisfies every constraint (the order of edits matters: content, then format)."""
    kinds = {c["kind"]: c.get("arg") for c in constraints}
    sentences = list(TOPICS[topic])
    rng.shuffle(sentences)
    n = kinds.get("bullets") or (2 if "max_words" in kinds else rng.randint(2, 3))  # 2 sentences fit any word limit
    sentences = (sentences * 2)[:n]
    if "include_word" in kinds:
        sentences[0] = sentences[0].rstrip(".") + f" and it feels {kinds['include_word']}."
    if "start_with" in kinds:
        sentences[0] = f"{kinds['start_with'].capitalize()} {sentences[0][0].lower()}{sentences[0][1:]}"
    if "bullets" in kinds:
        text = "\n".join(f"- {s}" for s in sentences)
    else:
        text = " ".join(sentences)
    if "no_commas" in kinds:
        text = text.replace(",", "")
    if "end_with" in kinds:
        text = text.rstrip() + " " + kinds["end_with"].capitalize() + "."
    if "lowercase" in kinds:
        text = text.lower()
    if "json" in kinds:
        text = json.dumps({"topic": topic, "response": text}, indent=None if "no_commas" in kinds else 1)
        if "no_commas" in kinds:  # a two-key JSON object needs a comma; use one key instead
            text = json.dumps({"response": json.loads(text)["response"]})
    return text


class SynthIF(Task):
    eval_type = "generative"
    name = "SynthIF"

    def __init__(self, split="train", size=20_000, seed=0, min_constraints=1, max_constraints=3, **kwargs):
        super().__init__(**kwargs)
        if split not in ("train", "test"):
            raise ValueError(f"SynthIF split {split!r}: expected 'train' or 'test'")
        if not 1 <= min_constraints <= max_constraints <= 3:
            raise ValueError(f"constraints {min_constraints}..{max_constraints}: need 1 <= min <= max <= 3")
        self.split, self.size, self.seed = split, size, seed
        self.min_constraints, self.max_constraints = min_constraints, max_constraints

    def num_examples(self):
        return self.size

    def sample_constraints(self, rng):
        k = rng.randint(self.min_constraints, self.max_constraints)
        kinds = []
        for kind in rng.sample(sorted(VERIFIERS), len(VERIFIERS)):  # greedy: add kinds that fit with those chosen
            if len(kinds) < k and all(frozenset((kind, other)) not in INCOMPATIBLE for other in kinds):
                kinds.append(kind)
        constraints = []
        for kind in kinds:
            if kind in NUMERIC_RANGES:
                arg = rng.randint(*NUMERIC_RANGES[kind][self.split])
            elif kind in ("include_word", "start_with"):
                arg = rng.choice(INCLUDE_WORDS)
            elif kind == "end_with":
                arg = rng.choice(END_PHRASES)
            else:
                arg = None
            constraints.append({"kind": kind, "arg": arg})
        return constraints

    def get_example(self, index):
        rng = random.Random(f"synthif-{self.seed}-{self.split}-{index}")
        topic = rng.choice(sorted(TOPICS))
        constraints = self.sample_constraints(rng)
        lines = [rng.choice(USER_TEMPLATES[self.split]).format(topic=topic)]
        lines += [rng.choice(PHRASES[c["kind"]][self.split]).format(arg=c["arg"]) for c in constraints]
        return chat(" ".join(lines), build_response(topic, constraints, rng), constraints=constraints, topic=topic)

    def evaluate(self, conversation, completion):
        return score_constraints(conversation["constraints"], completion) == 1.0

    def reward(self, conversation, completion):
        return score_constraints(conversation["constraints"], completion)


if __name__ == "__main__":
    task = SynthIF("train")
    for i in range(4):
        conv = task[i]
        print("Q:", conv["messages"][0]["content"])
        print("A:", conv["messages"][1]["content"], "\n")
