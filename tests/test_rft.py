"""
Tests of the RFT selection logic (nanochat/rft.py): path checks, equation-list dedup, the Levenshtein
diversity choice and multi-source pooling.

    python -m pytest tests/test_rft.py -q
"""
import functools
import random

from nanochat.rft import (check_path, distinct_equation_lists, equation_is_true, equation_key, levenshtein,
                          pool_paths, select_paths)

# -----------------------------------------------------------------------------
# path checks


def test_false_equation_rejected():
    ok, why = check_path("6 boxes of 7 is 6*7 = <<6*7=43>>43 apples.\n#### 43", answer="43")
    assert not ok and why == "false equation: 6*7=43"
    ok, why = check_path("6 boxes of 7 is 6*7 = <<6*7=42>>42 apples.\n#### 42", answer="42")
    assert ok and why == "ok"


def test_wrong_or_missing_answer_rejected():
    assert check_path("6*7 = <<6*7=42>>42\n#### 41", answer="42") == (False, "wrong answer")
    assert check_path("6*7 = <<6*7=42>>42", answer="42") == (False, "no answer")
    assert check_path("<<6*7=42>>\n#### $42.00", answer="42")[0]  # the answer is compared as a number


def test_tool_call_form_checked_too():
    # with the calculator off the model writes the tool output itself; a wrong one must be caught
    good = "So <|python_start|>12*3<|python_end|><|output_start|>36<|output_end|> stickers.\n#### 36"
    bad = good.replace(">36<", ">38<")
    assert check_path(good, "36") == (True, "ok")
    assert check_path(bad, "36") == (False, "false equation: 12*3=38")
    parts = [{"type": "text", "text": "So "}, {"type": "python", "text": "12*3"},
             {"type": "python_output", "text": "36"}, {"type": "text", "text": " stickers.\n#### 36"}]
    assert check_path(parts, "36") == (True, "ok")
    unanswered = parts[:2] + parts[3:]
    assert check_path(unanswered, "36") == (False, "unanswered tool call")


def test_equation_truth_values():
    assert equation_is_true("10/3", "3.333333")  # the calculator's own rounding
    assert equation_is_true("10/3", "3.3333333")  # more exact is fine
    assert not equation_is_true("10/3", "3.33")
    assert equation_is_true("12 * 3", "36.0")
    assert not equation_is_true("__import__('os')", "0")  # refused by the safe calculator, never evaluated
    assert not equation_is_true("2+2", "four")


# -----------------------------------------------------------------------------
# dedup and diversity


def test_same_equations_different_wording_collapse():
    a = "Ava has 3*4 = <<3*4=12>>12 apples. Then 12+5 = <<12+5=17>>17.\n#### 17"
    b = "Each of 3 bags holds 4, so <<3 * 4 = 12>>12. Adding 5 gives <<12 + 5=17>>17.\n#### 17"
    c = "First 4+5... no: <<3*4=12>>12 and <<5+12=17>>17.\n#### 17"  # another order of the sum: distinct
    assert equation_key(a) == equation_key(b) == ("3*4=12", "12+5=17")
    kept = select_paths([{"text": a}, {"text": b}, {"text": c}])
    assert len(kept) == 2 and distinct_equation_lists(kept) == 2
    assert kept[1]["text"] == c


def test_farther_path_wins_in_either_order():
    anchor = {"text": "<<2*5=10>> ten", "key": ("2*5=10",)}
    near = {"text": "<<1+1=2>> ten", "key": ("1+1=2",)}  # close to the anchor's wording
    far = {"text": "Completely different words here: <<1+1=2>> so two", "key": ("1+1=2",)}
    assert levenshtein(far["text"], anchor["text"]) > levenshtein(near["text"], anchor["text"])
    for order in ([anchor, near, far], [anchor, far, near]):
        kept = select_paths(order)
        assert [p["text"] for p in kept] == [anchor["text"], far["text"]]


def test_farther_means_summed_over_other_kept_paths():
    # x is far from p but close to q; y is moderately far from both: the sum decides, y wins
    p, q = {"text": "aaaaaaaaaa", "key": ("p",)}, {"text": "bbbbbbbbbb", "key": ("q",)}
    x = {"text": "bbbbbbbbbc", "key": ("r",)}  # 10 from p, 1 from q: sum 11
    y = {"text": "aaaaabbbbb", "key": ("r",)}  # 5 from p, 5 from q: sum 10
    z = {"text": "ccccccccca", "key": ("r",)}  # 9 + 10 = 19: the farthest
    assert [k["text"] for k in select_paths([p, q, x, y])] == ["aaaaaaaaaa", "bbbbbbbbbb", "bbbbbbbbbc"]
    assert [k["text"] for k in select_paths([p, q, y, x])][2] == "bbbbbbbbbc"
    assert [k["text"] for k in select_paths([p, q, x, z, y])][2] == "ccccccccca"


def test_equation_free_paths_share_one_key():
    paths = [{"text": "The answer is 5.\n#### 5"}, {"text": "Five.\n#### 5"}, {"text": "It is 5\n#### 5"}]
    assert {equation_key(p["text"]) for p in paths} == {()}
    assert len(select_paths(paths)) == 1


def test_identical_texts_keep_the_first():
    a = {"text": "<<1+2=3>>3\n#### 3", "id": 0}
    b = {"text": "<<1+2=3>>3\n#### 3", "id": 1}
    assert [p["id"] for p in select_paths([a, b])] == [0]


# -----------------------------------------------------------------------------
# Levenshtein against hand values and a naive recursion


@functools.lru_cache(maxsize=None)
def _naive(a, b):
    if not a or not b:
        return len(a) + len(b)
    return min(_naive(a[1:], b) + 1, _naive(a, b[1:]) + 1, _naive(a[1:], b[1:]) + (a[0] != b[0]))


def test_levenshtein_reference():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("same", "same") == 0
    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 7)))
        b = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 7)))
        assert levenshtein(a, b) == _naive(a, b) == levenshtein(b, a)


# -----------------------------------------------------------------------------
# pooling several models


def test_union_keeps_what_any_source_found():
    s1 = [{"text": "<<2*3=6>>6 then <<6+1=7>>7\n#### 7"}, {"text": "2*3 is <<2*3=6>>6, +1: <<6+1=7>>7\n#### 7"}]
    s2 = [{"text": "<<3*2=6>>6 and <<1+6=7>>7\n#### 7"}, {"text": "<<2*3=6>>6 so <<6+1=7>>7.\n#### 7"}]
    pooled = pool_paths({"sft_a": s1, "sft_b": s2})
    assert len(pooled) == 4 and [p["source"] for p in pooled] == ["sft_a", "sft_a", "sft_b", "sft_b"]
    kept = select_paths(pooled)
    assert distinct_equation_lists(select_paths(s1)) == 1
    assert distinct_equation_lists(kept) == 2  # model a found one equation list, the union two
    assert kept[1]["source"] == "sft_b" and kept[1]["text"] == s2[0]["text"]


def test_checked_then_selected():
    answer = "7"
    raw = ["<<2*3=6>>6 then <<6+1=7>>7\n#### 7", "<<2*3=5>>5 then <<5+2=7>>7\n#### 7", "<<2*3=6>>6\n#### 6"]
    good = [{"text": t} for t in raw if check_path(t, answer)[0]]
    assert [p["text"] for p in good] == [raw[0]]
