"""
Tests of tasks/critique.py: the corruptions of gold solutions, the rule-based step critic (hand-written
expected critiques), the conclusion parser, the sample -> solution conversion, and that a rendered critique
conversation trains on the critique only.

    python -m pytest tests/test_critique.py -q
"""
import random

import pytest

from nanochat.calculator import calculate
from tasks.critique import (CORRUPTIONS, ConversationList, completion_to_solution, corrupt, critique,
                            critique_conversation, parse_conclusion)
from tasks.synthmath import SynthMath
from tasks.verify import annotations_to_parts, extract_equations, split_steps

GOLD = ("The books cost 12*3 = <<12*3=36>>36 dollars.\n"
        "The change is 50-36 = <<50-36=14>>14 dollars.\n"
        "#### 14")
CONV = {"messages": [{"role": "user", "content": "Q"}], "solutions": [GOLD], "answer": "14"}


def test_gold_is_right_with_exact_text():
    text, verdict = critique(CONV, GOLD)
    assert verdict is True
    assert text == ("Step 1: 12*3 = 36 is correct.\nStep 2: 50-36 = 14 is correct.\n"
                    "The final answer 14 is correct.\nConclusion: right")


def test_wrong_step_result_exact_text():
    cand = GOLD.replace("<<12*3=36>>36", "<<12*3=37>>37")
    text, verdict = critique(CONV, cand)
    assert verdict is False
    assert text.split("\n") == ["Step 1: 12*3 = 37 is wrong, it should be 12*3 = 36.",
                                "Step 2: 50-36 = 14 is correct.",
                                "The final answer 14 is correct.", "Conclusion: wrong"]


def test_propagated_error_is_wrong_even_with_true_arithmetic():
    cand = ("The books cost 12*3 = <<12*3=37>>37 dollars.\nThe change is 50-37 = <<50-37=13>>13 dollars.\n#### 13")
    text, verdict = critique(CONV, cand)
    assert verdict is False
    assert "Step 2: 50-37 = 13 is wrong, it should be 50-36 = 14." in text
    assert "The final answer 13 is wrong, it should be 14." in text


def test_commutative_step_is_correct_and_missing_answer_is_wrong():
    cand = GOLD.replace("12*3 = <<12*3=36>>", "3*12 = <<3*12=36>>")
    assert critique(CONV, cand)[1] is True
    text, verdict = critique(CONV, GOLD.rsplit("\n", 1)[0])  # no '#### N' line
    assert verdict is False and "There is no final answer, it should be 14." in text


def test_extra_step_and_uncomputable_step():
    cand = GOLD.replace("#### 14", "Then 14*2 = <<14*2=28>>28.\n#### 14")
    text, verdict = critique(CONV, cand)
    assert verdict is False and "Step 3: 14*2 = 28 is wrong, it is not needed." in text
    text, verdict = critique(CONV, GOLD.replace("<<12*3=36>>", "<<12*x=36>>"))
    assert verdict is False and "Step 1: 12*x = 36 is wrong, it should be 12*3 = 36." in text


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_every_corruption_is_caught_on_synthmath(kind):
    task = SynthMath("train", size=60, seed=3, min_steps=2, max_steps=3)
    rng, made = random.Random(0), 0
    for conv in task:
        gold = conv["solutions"][0]
        assert critique(conv, gold)[1] is True  # every gold order is right
        bad = corrupt(gold, kind, rng)
        if bad is None:
            continue
        made += 1
        assert bad != gold
        text, verdict = critique(conv, bad)
        assert verdict is False and text.endswith("Conclusion: wrong")
        steps, answer = split_steps(bad)
        eqs = [eq for s in steps for eq in s["equations"]]
        gold_eqs = [eq for s in split_steps(gold)[0] for eq in s["equations"]]
        true = [calculate(e) == r for e, r in eqs]
        if kind == "wrong_final":
            assert all(true) and eqs == gold_eqs and answer != conv["answer"]
        elif kind == "wrong_result":  # exactly one false step, the answer untouched
            assert true.count(False) == 1 and answer == conv["answer"]
        else:  # propagated / wrong operation: a consistent solution (true arithmetic but the slip), answer moved
            assert true.count(False) == (1 if kind == "propagated" else 0)
            assert answer == eqs[-1][1] and answer != conv["answer"]
        if kind == "wrong_operation":
            diff = [(a, b) for a, b in zip(eqs, gold_eqs) if a != b]
            k = next(i for i, (a, b) in enumerate(zip(eqs, gold_eqs)) if a != b)
            changed = [(x, y) for x, y in zip(eqs[k][0], gold_eqs[k][0]) if x != y]
            assert diff and len(changed) == 1 and changed[0][0] in "+-*" and changed[0][1] in "+-*/"
    assert made >= 40, f"only {made}/60 problems took the {kind} corruption"


def test_corrupt_rejects_unknown_kind_and_answerless():
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(GOLD, "typo", random.Random(0))
    assert corrupt("no answer here", "wrong_result", random.Random(0)) is None


def test_parse_conclusion():
    assert parse_conclusion("Step 1 ...\nConclusion: right") is True
    assert parse_conclusion("Conclusion: right\nno wait\nConclusion: WRONG.") is False  # the last one counts
    assert parse_conclusion("Conclusion: maybe") is None and parse_conclusion("") is None
    assert parse_conclusion("Conclusion: rightly") is None


def test_completion_to_solution_inverts_tool_calls():
    tags = {"python": ("<|python_start|>", "<|python_end|>"), "python_output": ("<|output_start|>", "<|output_end|>")}
    decoded = "".join(p["text"] if p["type"] == "text" else tags[p["type"]][0] + p["text"] + tags[p["type"]][1]
                      for p in annotations_to_parts(GOLD))
    assert completion_to_solution(decoded) == GOLD
    # a call the model never closed with an output loses its tags but keeps its text
    assert completion_to_solution("a <|python_start|>2+2<|python_end|> b") == "a 2+2 b"
    assert extract_equations(completion_to_solution(decoded)) == [("12*3", "36"), ("50-36", "14")]


def test_judge_task_scores_conclusions():
    text, verdict = critique(CONV, GOLD)
    conv = critique_conversation("Q", GOLD, text, verdict)
    task = ConversationList([conv], name="judge")
    assert len(task) == 1 and task[0]["verdict"] is True
    assert task.evaluate(task[0], "Step 1 ...\nConclusion: right") is True
    assert task.evaluate(task[0], "Conclusion: wrong") is False
    assert task.evaluate(task[0], "no verdict") is False


def test_loss_is_on_the_critique_only():
    tokenizer_mod = pytest.importorskip("nanochat.tokenizer")
    from tests.tiny_model import tiny_base_dir
    import os
    tok = tokenizer_mod.Tokenizer.from_directory(os.path.join(tiny_base_dir(), "tokenizer"))
    text, verdict = critique(CONV, GOLD)
    ids, mask = tok.render_conversation(critique_conversation("What is it?", GOLD, text, verdict))
    learned = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(learned) == text + "<|assistant_end|>"
