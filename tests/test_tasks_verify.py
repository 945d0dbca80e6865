"""
Tests for tasks/verify.py: number normalization edge cases, `#### N` extraction (the last wins, thinking
never counts), calculator annotations <-> tool parts, equation extraction in every written form, and the
step split/join used by CFT.

    python -m pytest tests/test_tasks_verify.py -q
"""
import pytest

from nanochat.calculator import calculate
from tasks.verify import (annotations_to_parts, extract_answer, extract_equations, join_steps, normalize_number,
                          numbers_equal, split_steps, strip_annotations, strip_thinking, used_tool, visible_text)

SOLUTION = ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
            "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n#### 18")


@pytest.mark.parametrize("text,expected", [
    ("18", "18"), ("18.", "18"), ("10.0", "10"), ("10.50", "10.5"), ("$1,000", "1000"), ("1,234,567.00", "1234567"),
    ("-3", "-3"), ("-0", "0"), ("0.0", "0"), (".5", "0.5"), ("+7", "7"), ("50%", "50"), (" 42 ", "42"),
    ("$ 5", "5"), ("3.", "3"), ("100000000000000000000000001", "100000000000000000000000001"),
    ("abc", None), ("", None), ("1e5", None), ("1/2", None), ("--3", None), (None, None), ("1.2.3", None),
])
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


def test_numbers_equal():
    assert numbers_equal("10", "10.0") and numbers_equal("$1,000", "1000.00") and numbers_equal("0.1", "0.10")
    assert not numbers_equal("10", "100") and not numbers_equal("x", "x")  # non-numbers never match


def test_extract_answer_last_wins_and_normalizes():
    assert extract_answer(SOLUTION) == "18"
    assert extract_answer("#### 5\nwait, no.\n#### 1,000.") == "1000"
    assert extract_answer("#### $12.50") == "12.5" and extract_answer("####-4") == "-4"
    assert extract_answer("the answer is 7") is None and extract_answer("#### seven") is None


def test_extract_answer_ignores_thinking():
    assert extract_answer("<|think_start|>maybe #### 9<|think_end|>The answer is 7.\n#### 7") == "7"
    assert extract_answer("#### 3 <|think_start|>#### 9<|think_end|>") == "3"  # the think span's 9 does not win
    assert extract_answer("<|think_start|>#### 9, still thinking") is None  # unterminated: nothing counts
    parts = [{"type": "think", "text": "#### 9"}, {"type": "text", "text": "#### 7"}]
    assert extract_answer(parts) == "7"


def test_annotations_to_parts_roundtrip_and_tool_agreement():
    parts = annotations_to_parts(SOLUTION)
    assert [p["type"] for p in parts] == ["text", "python", "python_output", "text", "python", "python_output", "text"]
    assert parts[1]["text"] == "16-3-4" and parts[2]["text"] == "9" and parts[-1]["text"].endswith("#### 18")
    # nothing lost: re-inserting the annotations gives back the solution
    rebuilt = "".join(f"<<{p['text']}=" if p["type"] == "python" else (f"{p['text']}>>" if p["type"] == "python_output" else p["text"]) for p in parts)
    assert rebuilt == SOLUTION
    # the calculator the engine runs agrees with every GSM8K result here
    for expr, result in extract_equations(parts):
        assert calculate(expr) == result
    assert annotations_to_parts("no tools here #### 1") == [{"type": "text", "text": "no tools here #### 1"}]


def test_extract_equations_all_forms_in_order():
    assert extract_equations(SOLUTION) == [("16-3-4", "9"), ("9*2", "18")]
    mixed = "a <<1+1=2>> b <|python_start|>2*3<|python_end|><|output_start|>6<|output_end|> c <<6-1=5>>"
    assert extract_equations(mixed) == [("1+1", "2"), ("2*3", "6"), ("6-1", "5")]
    assert extract_equations(annotations_to_parts(SOLUTION)) == [("16-3-4", "9"), ("9*2", "18")]
    assert extract_equations("plain text") == []


def test_split_join_steps():
    steps, answer = split_steps(SOLUTION)
    assert answer == "18" and len(steps) == 2 and steps[1]["equations"] == [("9*2", "18")]
    assert join_steps(steps, answer) == SOLUTION
    # a corrupted step (what CFT does) round-trips too
    steps[0] = {"line": steps[0]["line"].replace("=9>>9", "=8>>8"), "equations": [("16-3-4", "8")]}
    assert "<<16-3-4=8>>8" in join_steps(steps, answer)
    assert split_steps("no answer line")[1] is None


def test_strip_and_visible_text():
    text = "a<|think_start|>hidden<|think_end|>b<|python_start|>1+1<|python_end|><|output_start|>2<|output_end|>c"
    assert strip_thinking(text) == "b".join(["a", "<|python_start|>1+1<|python_end|><|output_start|>2<|output_end|>c"])
    assert visible_text(text) == "abc"
    assert used_tool(text) and not used_tool("abc")
    assert used_tool([{"type": "python", "text": "1"}]) and not used_tool([{"type": "text", "text": "x"}])
    assert strip_annotations(SOLUTION).startswith("Janet sells 16 - 3 - 4 = 9 duck eggs")
