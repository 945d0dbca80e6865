"""
Tests for the tasks' Hugging Face path (source="hf"), which cannot reach the Hub from CI or this machine.

`datasets.load_dataset` is replaced by a fake that serves tiny in-memory `datasets.Dataset`s with the real
schemas of each Hub dataset (allenai/ai2_arc, cais/mmlu incl. the nested auxiliary_train rows, openai/gsm8k
"main", openai/openai_humaneval, google-research-datasets/mbpp "full", HuggingFaceTB/smol-smoltalk) and records
every (path, name, split) asked for. The real tasks/common.py:load_hf wrapper runs in between, so its argument
passing and its one-sentence error are tested too. Each task's conversations are compared with hand-written
expected dicts, and evaluate/reward are checked on a right and a wrong completion (code in the sandbox).

    python -m pytest tests/test_tasks_hf.py -q
"""
import datasets
import pytest

import tasks.common
from tasks.arc import ARC
from tasks.gsm8k import GSM8K
from tasks.humaneval import HumanEval
from tasks.mbpp import MBPP
from tasks.mmlu import MMLU
from tasks.smoltalk import SmolTalk

MC_FOOTER = "\n\nAnswer with the letter of the correct choice."

# -----------------------------------------------------------------------------
# fake Hub: (path, config name, split) -> rows in the Hub's schema

ARC_EASY_TRAIN = [
    {"id": "Mercury_7175875", "question": "An astronomer observes that a planet rotates faster after a meteorite "
     "impact. Which is the most likely effect of this increase in rotation?",
     "choices": {"text": ["Planetary density will decrease.", "Planetary years will become longer.",
                          "Planetary days will become shorter.", "Planetary gravity will become stronger."],
                 "label": ["A", "B", "C", "D"]},
     "answerKey": "C"},
    # some ARC items label their choices 1-4 (and a few have 3 or 5 choices): we re-letter by position
    {"id": "NYSEDREGENTS_2015_4_8", "question": "  Which tool is best for measuring the mass of a rock?  ",
     "choices": {"text": ["ruler", "balance", "thermometer"], "label": ["1", "2", "3"]},
     "answerKey": "2"},
]
ARC_CHALLENGE_TEST = [
    {"id": "Mercury_SC_405487", "question": "Which property of a mineral can be determined just by looking at it?",
     "choices": {"text": ["luster", "mass", "weight", "hardness", "streak"], "label": ["A", "B", "C", "D", "E"]},
     "answerKey": "A"},
]

MMLU_FEATURES = datasets.Features({
    "question": datasets.Value("string"), "subject": datasets.Value("string"),
    "choices": datasets.Sequence(datasets.Value("string")),
    "answer": datasets.ClassLabel(names=["A", "B", "C", "D"]),  # an int on read, as on the Hub
})
MMLU_DEV = [
    {"question": "Find the degree of the field extension Q(sqrt(2)) over Q.", "subject": "abstract_algebra",
     "choices": ["0", "2", "1", "3"], "answer": 1},
    {"question": "Which of these is a prime number?", "subject": "elementary_mathematics",
     "choices": ["21", "27", "33", "37"], "answer": 3},
]
# cais/mmlu's auxiliary_train config (parquet) nests every row under a "train" struct
MMLU_AUX_FEATURES = datasets.Features({"train": {
    "answer": datasets.Value("int64"), "choices": datasets.Sequence(datasets.Value("string")),
    "question": datasets.Value("string"), "subject": datasets.Value("string")}})
MMLU_AUX = [{"train": {"answer": 0, "choices": ["a gas", "a liquid", "a solid", "a plasma"],
                       "question": "Ice is water in which state?", "subject": ""}}]

GSM8K_TRAIN = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"},
]
GSM8K_TEST = [
    {"question": "A shirt costs $20 and is sold at 25% off. What is the sale price in dollars?",
     "answer": "The discount is 20*25/100 = $<<20*25/100=5>>5.\nThe sale price is 20-5 = $<<20-5=15>>15.\n#### 15"},
]

HUMANEVAL_TEST = [
    {"task_id": "HumanEval/0",
     "prompt": 'from typing import List\n\n\ndef running_max(numbers: List[int]) -> List[int]:\n'
               '    """Return the largest value seen so far at each position.\n'
               '    >>> running_max([1, 3, 2])\n    [1, 3, 3]\n    """\n',
     "canonical_solution": "    out, best = [], None\n    for n in numbers:\n"
                           "        best = n if best is None else max(best, n)\n        out.append(best)\n    return out\n",
     "test": "\n\nMETADATA = {'author': 'test'}\n\n\ndef check(candidate):\n    assert candidate([]) == []\n"
             "    assert candidate([1, 3, 2]) == [1, 3, 3]\n    assert candidate([-5, -7, -1]) == [-5, -5, -1]\n",
     "entry_point": "running_max"},
    # like HumanEval/10, 32, 38, 50: the prompt defines a helper that the solution and the tests call
    {"task_id": "HumanEval/1",
     "prompt": 'def _rot(s: str, k: int) -> str:\n    """Rotate each lowercase letter of s by k places."""\n'
               '    return "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in s)\n\n\n'
               'def unrot(s: str, k: int) -> str:\n    """Undo _rot(s, k).\n    >>> unrot(_rot("abc", 3), 3)\n'
               "    'abc'\n    \"\"\"\n",
     "canonical_solution": "    return _rot(s, -k)\n",
     "test": '\n\ndef check(candidate):\n    for w in ["abc", "xyz", "hello"]:\n        assert candidate(_rot(w, 5), 5) == w\n',
     "entry_point": "unrot"},
]

MBPP_TEST = [
    # real MBPP code has Windows line endings; the rendered answer must not
    {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character from the string.",
     "code": "def remove_Occ(s,ch): \r\n    s = s.replace(ch, '', 1) \r\n    i = s.rfind(ch) \r\n"
             "    if i >= 0: \r\n        s = s[:i] + s[i + 1:] \r\n    return s ",
     "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"',
                   'assert remove_Occ("PHP","P") == "H"'],
     "test_setup_code": "", "challenge_test_list": ['assert remove_Occ("hellolloll","l") == "helollol"']},
]
MBPP_TRAIN = [
    {"task_id": 601, "text": "Write a function that doubles every number of a list.",
     "code": "def double_all(xs):\r\n    return [FACTOR * x for x in xs]",
     "test_list": ["assert double_all([1, 2]) == [2, 4]", "assert double_all([]) == []",
                   "assert double_all([-3]) == [-6]"],
     "test_setup_code": "FACTOR = 2", "challenge_test_list": []},
]

SMOLTALK_TRAIN = [
    {"messages": [{"content": "What is the capital of France?", "role": "user"},
                  {"content": "The capital of France is Paris.", "role": "assistant"},
                  {"content": "And of Italy?", "role": "user"},
                  {"content": "Rome.", "role": "assistant"}],
     "source": "smol-magpie-ultra"},
    {"messages": [{"content": "You are a pirate. Answer like one.", "role": "system"},
                  {"content": "How are you today?", "role": "user"},
                  {"content": "Arr, fine as a calm sea!", "role": "assistant"}],
     "source": "systemchats-30k"},
]


def _hub():
    return {
        ("allenai/ai2_arc", "ARC-Easy", "train"): datasets.Dataset.from_list(ARC_EASY_TRAIN),
        ("allenai/ai2_arc", "ARC-Challenge", "test"): datasets.Dataset.from_list(ARC_CHALLENGE_TEST),
        ("cais/mmlu", "all", "dev"): datasets.Dataset.from_list(MMLU_DEV, features=MMLU_FEATURES),
        ("cais/mmlu", "auxiliary_train", "train"): datasets.Dataset.from_list(MMLU_AUX, features=MMLU_AUX_FEATURES),
        ("openai/gsm8k", "main", "train"): datasets.Dataset.from_list(GSM8K_TRAIN),
        ("openai/gsm8k", "main", "test"): datasets.Dataset.from_list(GSM8K_TEST),
        ("openai/openai_humaneval", None, "test"): datasets.Dataset.from_list(HUMANEVAL_TEST),
        ("google-research-datasets/mbpp", "full", "test"): datasets.Dataset.from_list(MBPP_TEST),
        ("google-research-datasets/mbpp", "full", "train"): datasets.Dataset.from_list(MBPP_TRAIN),
        ("HuggingFaceTB/smol-smoltalk", None, "train"): datasets.Dataset.from_list(SMOLTALK_TRAIN),
    }


@pytest.fixture
def hub(monkeypatch):
    """Replaces datasets.load_dataset (load_hf imports it at call time); returns the list of requests made."""
    data, requests = _hub(), []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        requests.append((path, name, split))
        if (path, name, split) not in data:
            # what the real library raises for an unknown config/split (the message differs, the wrapper hides it)
            raise ValueError(f"Unknown split {split!r} for {path} ({name})")
        return data[(path, name, split)]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return requests


# -----------------------------------------------------------------------------
# multiple choice


def test_arc_hf_renders_question_choices_and_gold_letter(hub):
    task = ARC("ARC-Easy", "train", source="hf")
    assert hub == [("allenai/ai2_arc", "ARC-Easy", "train")]
    assert len(task) == 2
    assert task[0] == {
        "messages": [
            {"role": "user", "content": ARC_EASY_TRAIN[0]["question"] + "\n\n"
             "A. Planetary density will decrease.\nB. Planetary years will become longer.\n"
             "C. Planetary days will become shorter.\nD. Planetary gravity will become stronger." + MC_FOOTER},
            {"role": "assistant", "content": "C"},
        ],
        "letters": ["A", "B", "C", "D"], "answer": "C", "id": "Mercury_7175875", "task": "ARC-Easy",
    }
    # numeric labels "1".."3" become letters A..C by position; answerKey "2" -> "B"; whitespace stripped
    conv = task[1]
    assert conv["messages"][0]["content"] == ("Which tool is best for measuring the mass of a rock?\n\n"
                                              "A. ruler\nB. balance\nC. thermometer" + MC_FOOTER)
    assert conv["letters"] == ["A", "B", "C"] and conv["answer"] == "B" and conv["messages"][1]["content"] == "B"

    assert task.evaluate(conv, "B") and task.evaluate(conv, " B.") and task.reward(conv, "B") == 1.0
    assert not task.evaluate(conv, "A") and not task.evaluate(conv, "Ball") and task.reward(conv, "C") == 0.0


def test_arc_challenge_five_choices(hub):
    task = ARC("ARC-Challenge", "test", source="hf")
    assert hub == [("allenai/ai2_arc", "ARC-Challenge", "test")]
    conv = task[0]
    assert conv["letters"] == list("ABCDE") and conv["answer"] == "A" and conv["task"] == "ARC-Challenge"
    assert "\nE. streak\n" in conv["messages"][0]["content"]
    assert task.evaluate(conv, "A") and not task.evaluate(conv, "E")


def test_mmlu_hf_classlabel_answer_and_subject(hub):
    task = MMLU("all", "dev", source="hf")
    assert hub == [("cais/mmlu", "all", "dev")]
    assert len(task) == 2
    assert task[0] == {
        "messages": [
            {"role": "user", "content": "Find the degree of the field extension Q(sqrt(2)) over Q.\n\n"
                                        "A. 0\nB. 2\nC. 1\nD. 3" + MC_FOOTER},
            {"role": "assistant", "content": "B"},
        ],
        "letters": ["A", "B", "C", "D"], "answer": "B", "subject": "abstract_algebra", "task": "MMLU",
    }
    conv = task[1]
    assert conv["answer"] == "D" and conv["subject"] == "elementary_mathematics"
    assert task.evaluate(conv, "D") and not task.evaluate(conv, "B") and task.reward(conv, "A") == 0.0


def test_mmlu_auxiliary_train_nested_rows(hub):
    task = MMLU("auxiliary_train", "train", source="hf")
    assert hub == [("cais/mmlu", "auxiliary_train", "train")]
    conv = task[0]
    assert conv["messages"][0]["content"] == ("Ice is water in which state?\n\n"
                                              "A. a gas\nB. a liquid\nC. a solid\nD. a plasma" + MC_FOOTER)
    assert conv["answer"] == "A" and conv["subject"] == ""


# -----------------------------------------------------------------------------
# math


def test_gsm8k_hf_annotations_become_tool_parts(hub):
    task = GSM8K("train", source="hf")
    assert hub == [("openai/gsm8k", "main", "train")]
    conv = task[0]
    assert conv["messages"][0] == {"role": "user", "content": GSM8K_TRAIN[0]["question"]}
    assert conv["messages"][1] == {"role": "assistant", "content": [
        {"type": "text", "text": "Natalia sold 48/2 = "},
        {"type": "python", "text": "48/2"},
        {"type": "python_output", "text": "24"},
        {"type": "text", "text": "24 clips in May.\nNatalia sold 48+24 = "},
        {"type": "python", "text": "48+24"},
        {"type": "python_output", "text": "72"},
        {"type": "text", "text": "72 clips altogether in April and May.\n#### 72"},
    ]}
    assert conv["answer"] == "72" and conv["task"] == "GSM8K"
    assert [s["equations"] for s in conv["steps"]] == [[("48/2", "24")], [("48+24", "72")]]
    # the gold parts score as right; so do plain strings ending in the same number, written differently
    assert task.evaluate(conv, conv["messages"][1]["content"])
    assert task.evaluate(conv, "48 + 24 = 72\n#### 72") and task.evaluate(conv, "#### 72.0")
    assert task.reward(conv, "#### 72") == 1.0
    assert not task.evaluate(conv, "#### 71") and not task.evaluate(conv, "72") and task.reward(conv, "#### 24") == 0.0


def test_gsm8k_test_split_dollar_amounts(hub):
    task = GSM8K("test", source="hf")
    assert hub == [("openai/gsm8k", "main", "test")]
    conv = task[0]
    parts = conv["messages"][1]["content"]
    assert [p["text"] for p in parts if p["type"] == "python"] == ["20*25/100", "20-5"]
    assert [p["text"] for p in parts if p["type"] == "python_output"] == ["5", "15"]
    assert "".join(p["text"] for p in parts if p["type"] == "text") == (
        "The discount is 20*25/100 = $5.\nThe sale price is 20-5 = $15.\n#### 15")
    assert conv["answer"] == "15" and task.evaluate(conv, "#### $15") and not task.evaluate(conv, "#### 5")


# -----------------------------------------------------------------------------
# code (scored in the sandbox: a handful of runs only)


def test_humaneval_hf_render_and_sandbox(hub):
    task = HumanEval(source="hf")
    assert hub == [("openai/openai_humaneval", None, "test")]
    row = HUMANEVAL_TEST[0]
    conv = task[0]
    assert conv["messages"] == [
        {"role": "user", "content": f"Complete this Python function.\n\n```python\n{row['prompt']}```"},
        {"role": "assistant", "content": f"```python\n{row['prompt']}{row['canonical_solution']}```"},
    ]
    assert (conv["id"], conv["entry_point"], conv["prompt"], conv["test"]) == (
        "HumanEval/0", "running_max", row["prompt"], row["test"])
    assert task.evaluate(conv, conv["messages"][1]["content"])  # the gold answer passes its own tests
    assert task.evaluate(conv, row["canonical_solution"])  # a bare body continues the prompt
    assert task.reward(conv, "```python\n" + row["canonical_solution"].replace("max(best, n)", "min(best, n)") + "```") == 0.0


def test_humaneval_restated_function_keeps_prompt_helpers(hub):
    # a completion that restates only the entry function must still see the helper the prompt defined
    task = HumanEval(source="hf")
    conv = task[1]
    assert conv["id"] == "HumanEval/1" and conv["entry_point"] == "unrot"
    assert task.evaluate(conv, "Here you go:\n```python\ndef unrot(s, k):\n    return _rot(s, 26 - k % 26)\n```")
    assert not task.evaluate(conv, "```python\ndef unrot(s, k):\n    return _rot(s, k)\n```")


def test_mbpp_hf_render_and_sandbox(hub):
    task = MBPP("test", source="hf")
    assert hub == [("google-research-datasets/mbpp", "full", "test")]
    row = MBPP_TEST[0]
    conv = task[0]
    assert conv["messages"] == [
        {"role": "user", "content": row["text"] + "\nYour code should pass this test:\n" + row["test_list"][0]},
        {"role": "assistant", "content": "```python\n" + row["code"].replace("\r", "") + "\n```"},
    ]
    assert "\r" not in conv["messages"][1]["content"]
    assert conv["id"] == 11 and conv["setup"] == "" and conv["tests"] == row["test_list"] + row["challenge_test_list"]
    assert task.evaluate(conv, conv["messages"][1]["content"])
    wrong = "```python\ndef remove_Occ(s, ch):\n    return s.replace(ch, '', 1)\n```"  # forgets the last occurrence
    assert not task.evaluate(conv, wrong)


def test_mbpp_train_split_runs_setup_code(hub):
    task = MBPP("train", source="hf")
    assert hub == [("google-research-datasets/mbpp", "full", "train")]
    conv = task[0]
    assert conv["setup"] == "FACTOR = 2" and conv["tests"] == MBPP_TRAIN[0]["test_list"]
    # the program is setup, code, tests in that order (the gold code needs FACTOR from the setup)
    program = task.program(conv, conv["messages"][1]["content"])
    assert program.index("FACTOR = 2") < program.index("def double_all") < program.index("assert double_all([1, 2])")


# -----------------------------------------------------------------------------
# general chat


def test_smoltalk_hf_messages_pass_through(hub):
    task = SmolTalk("train", source="hf")
    assert hub == [("HuggingFaceTB/smol-smoltalk", None, "train")]
    assert len(task) == 2
    for i, row in enumerate(SMOLTALK_TRAIN):
        # exactly the messages (system one included), role and content only; the "source" column is dropped
        assert task[i] == {"messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]],
                           "task": "SmolTalk"}
    with pytest.raises(NotImplementedError, match="no automatic evaluation"):
        task.evaluate(task[0], "Paris")


def test_smoltalk_system_message_renders_folded():
    tokenizer = pytest.importorskip("nanochat.tokenizer")
    from unittest import mock

    with mock.patch.object(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(SMOLTALK_TRAIN)):
        conv = SmolTalk("train", source="hf")[1]
    corpus = [m["content"] for row in SMOLTALK_TRAIN for m in row["messages"]]
    tok = tokenizer.Tokenizer.train_from_iterator(iter(corpus * 3), vocab_size=256 + len(tokenizer.SPECIAL_TOKENS) + 50)
    ids, mask = tok.render_conversation(conv)
    assert tok.decode(ids) == ("<|bos|><|user_start|>You are a pirate. Answer like one.\n\nHow are you today?<|user_end|>"
                               "<|assistant_start|>Arr, fine as a calm sea!<|assistant_end|>")
    # only the assistant's reply (and its end token) is learned
    learned = [t for t, m in zip(ids, mask) if m]
    assert tok.decode(learned) == "Arr, fine as a calm sea!<|assistant_end|>"


# -----------------------------------------------------------------------------
# source choice and the load_hf wrapper


def test_auto_source_uses_hf_when_reachable(hub, monkeypatch):
    monkeypatch.setattr(tasks.common, "_HF_REACHABLE", True)  # the probe's cached answer
    task = GSM8K("train", source="auto")
    assert task.source == "hf" and hub == [("openai/gsm8k", "main", "train")] and task[0]["answer"] == "72"


def test_auto_source_falls_back_offline_when_unreachable(hub, monkeypatch):
    monkeypatch.setattr(tasks.common, "_HF_REACHABLE", False)
    assert tasks.common.choose_source("auto", "X") == "offline"
    with pytest.raises(RuntimeError, match="only available online"):
        SmolTalk("train", source="auto")
    assert hub == []  # never asked the Hub


def test_load_hf_failure_is_one_clear_sentence(hub):
    # SmolTalk test split is not in the fake hub: the wrapper turns the library's error into a RuntimeError
    with pytest.raises(RuntimeError, match=r"could not load HuggingFaceTB/smol-smoltalk \(None, split test\).*Fix:"):
        SmolTalk("test", source="hf")
    assert hub == [("HuggingFaceTB/smol-smoltalk", None, "test")]
    with pytest.raises(ValueError, match="source='web'"):
        ARC("ARC-Easy", "train", source="web")


def test_chat_data_registry_builds_hf_tasks(hub):
    from nanochat.chat_data import REGISTRY

    gsm = REGISTRY["gsm8k"]("train", "hf", None)
    aux = REGISTRY["mmlu-aux"]("train", "hf", None)
    assert (len(gsm), len(aux)) == (1, 1)
    assert sorted(hub) == [("cais/mmlu", "auxiliary_train", "train"), ("openai/gsm8k", "main", "train")]
