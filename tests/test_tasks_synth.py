"""
Tests for the synthetic tasks (synthmath, mcq, spelling, identity, synthif): determinism, train/held-out
splits with disjoint templates and number ranges, gold answers recomputed independently (the calculator,
str.count, a brute-force check of each MC answer), every generated response passing its own verifiers, and
verifiers rejecting wrong answers.

    python -m pytest tests/test_tasks_synth.py -q
"""
import json
import re

import pytest

from nanochat.calculator import calculate
from tasks import mcq, spelling, synthif, synthmath
from tasks.identity import Identity
from tasks.mcq import MCQ
from tasks.spelling import Spelling
from tasks.synthif import SynthIF, check_constraint, score_constraints
from tasks.synthmath import SynthMath
from tasks.verify import extract_answer, extract_equations

N = 400  # items per split checked in each test (fast; the generators are pure Python)


def template_regex(template):
    """A template as a regex that matches its filled-in text (placeholders match anything)."""
    pieces = re.split(r"\{[a-z_]+\}", template)
    return re.compile(".*".join(re.escape(p) for p in pieces), re.DOTALL)


# -----------------------------------------------------------------------------
# synthmath


def test_synthmath_deterministic_and_json_serializable():
    a, b = SynthMath("train", seed=3), SynthMath("train", seed=3)
    assert all(a[i] == b[i] for i in range(50))
    assert a[0] != SynthMath("train", seed=4)[0]
    json.dumps(a[0])  # self-contained: a conversation can be shipped anywhere


def test_synthmath_solutions_are_correct():
    for split in ("train", "test"):
        task = SynthMath(split, max_number=30)
        for conv in task[:N]:
            assert len(conv["solutions"]) >= 1
            for solution in conv["solutions"]:
                eqs = extract_equations(solution)
                assert 1 <= len(eqs) <= 4
                for expr, result in eqs:  # every step is what the engine's calculator would return
                    assert calculate(expr) == result, (expr, result)
                assert extract_answer(solution) == conv["answer"]
                assert int(conv["answer"]) >= 0
            # the rendered answer is one of the solutions, as tool parts
            parts = conv["messages"][1]["content"]
            assert extract_equations(parts) and extract_answer(parts) == conv["answer"]


def test_synthmath_several_step_orders_exist():
    task = SynthMath("train")
    multi = [conv for conv in task[:N] if len(conv["solutions"]) > 1]
    assert len(multi) > N // 4
    assert all(len(set(conv["solutions"])) == len(conv["solutions"]) for conv in multi)  # really different
    families = {conv["family"] for conv in multi}
    assert families >= {"inventory", "shopping", "earnings", "sharing"}


def test_synthmath_splits_disjoint_templates_and_numbers():
    train_t, test_t = synthmath.count_templates("train"), synthmath.count_templates("test")
    assert train_t and test_t and not (train_t & test_t)
    train, test = SynthMath("train", max_number=40), SynthMath("test", max_number=40)
    train_q = [conv["messages"][0]["content"] for conv in train[:N]]
    test_q = [conv["messages"][0]["content"] for conv in test[:N]]
    # every question is explained by a template of its own split and by none of the other split's top-level ones
    top = lambda split: [t for fam in ("inventory", "shopping", "earnings", "sharing") for t in synthmath.TEMPLATES[fam][split]]
    for qs, own, other in ((train_q, "train", "test"), (test_q, "test", "train")):
        for q in qs:
            assert any(template_regex(t).fullmatch(q) for t in top(own)), q
            assert not any(template_regex(t).fullmatch(q) for t in top(other)), q
    assert all(2 <= n <= 40 for conv in train[:N] for n in conv["numbers"])
    assert all(41 <= n <= 80 for conv in test[:N] for n in conv["numbers"])
    assert not set(train_q) & set(test_q)


def test_synthmath_vocab_shared_by_default_and_split_on_request():
    names = lambda task: {n for conv in task[:N] for n in synthmath.NAMES if n in conv["messages"][0]["content"]}
    assert len(names(SynthMath("train")) & names(SynthMath("test"))) > 10
    assert not names(SynthMath("train", shared_vocab=False)) & names(SynthMath("test", shared_vocab=False))


def test_synthmath_difficulty_knobs_and_errors():
    one = SynthMath("train", min_steps=1, max_steps=1)
    assert all(len(extract_equations(conv["solutions"][0])) == 1 for conv in one[:100])
    four = SynthMath("train", min_steps=4, max_steps=4, families=["earnings"])
    assert all(len(extract_equations(conv["solutions"][0])) == 4 for conv in four[:100])
    with pytest.raises(ValueError, match="steps"):
        SynthMath(min_steps=0)
    with pytest.raises(ValueError, match="families"):
        SynthMath(families=["geometry"])


def test_synthmath_reward():
    task = SynthMath("test")
    conv = task[0]
    gold = conv["answer"]
    assert task.reward(conv, f"blah\n#### {gold}") == 1.0
    assert task.reward(conv, f"#### {int(gold) + 1}") == 0.0
    assert task.reward(conv, f"#### {gold}\nhmm, actually\n#### {int(gold) + 1}") == 0.0  # the last one counts
    assert task.evaluate(conv, f"#### {gold}.0")


def test_synthmath_thinking_variant():
    task = SynthMath("train", think=True)
    for conv in task[:50]:
        think, answer = conv["messages"][1]["content"]
        assert think["type"] == "think" and answer["type"] == "text"
        assert "<<" not in think["text"] and "####" not in think["text"]  # prose only, no tool calls
        assert answer["text"].endswith(f"#### {conv['answer']}")
        assert task.evaluate(conv, conv["messages"][1]["content"])
        # a wrong number inside the thinking does not matter; the one after it does
        assert task.evaluate(conv, f"<|think_start|>#### 123456789<|think_end|>#### {conv['answer']}")


def test_synthmath_without_tools_writes_its_own_arithmetic():
    from nanochat.rft import check_path
    from tasks.verify import extract_equations
    with_tools, without = SynthMath("train", seed=3), SynthMath("train", seed=3, tools=False)
    for a, b in zip(with_tools[:50], without[:50]):
        parts, text = a["messages"][1]["content"], b["messages"][1]["content"]
        assert isinstance(text, str) and "<<" in text and text.endswith(f"#### {b['answer']}")
        # the same equations: tool calls + outputs there, inline annotations here
        calls = [(p["text"], q["text"]) for p, q in zip(parts, parts[1:]) if p["type"] == "python"]
        assert extract_equations(text) == calls
        assert without.evaluate(b, text) and check_path(text, b["answer"]) == (True, "ok")
    wrong = text.replace(f"={calls[-1][1]}>>", f"={int(calls[-1][1]) + 1}>>")
    assert check_path(wrong, b["answer"])[1].startswith("false equation")  # caught though the answer is right


# -----------------------------------------------------------------------------
# multiple-choice practice


def test_mcq_gold_answers_recomputed():
    for split in ("train", "test"):
        task = MCQ(split, max_number=50)
        for conv in task[:N]:
            user = conv["messages"][0]["content"]
            choices = dict(re.findall(r"^([A-D])\. (.*)$", user, re.MULTILINE))
            gold = choices[conv["answer"]]
            kind = conv["kind"]
            if kind == "arithmetic":
                a, op, b = re.search(r"(\d+) ([+*-]) (\d+)", user).groups()
                assert int(gold) == eval(f"{a}{op}{b}")  # test-only eval of two literals, a reference
                assert len(set(choices.values())) == 4
            elif kind in ("largest", "smallest"):
                nums = [int(v) for v in choices.values()]
                assert int(gold) == (max(nums) if kind == "largest" else min(nums))
            elif kind == "category":
                cat = next(c for c in mcq.CATEGORIES if c in user)
                assert [v for v in choices.values() if v in mcq.CATEGORIES[cat]] == [gold]
            else:
                letter = re.search(r"letter (?:is )?([A-Z])", user).group(1).lower()
                assert [v for v in choices.values() if v.startswith(letter)] == [gold]
            assert task.evaluate(conv, conv["answer"])
            assert not task.evaluate(conv, next(l for l in conv["letters"] if l != conv["answer"]))


def test_mcq_splits_disjoint():
    train_t = {t for k in mcq.TEMPLATES.values() for t in k["train"]}
    test_t = {t for k in mcq.TEMPLATES.values() for t in k["test"]}
    assert not train_t & test_t
    assert all(2 <= n <= 50 for conv in MCQ("train")[:N] for n in conv["numbers"])
    assert all(51 <= n <= 100 for conv in MCQ("test")[:N] for n in conv["numbers"])


# -----------------------------------------------------------------------------
# spelling


def test_spelling_counts_match_str_count_and_reward_tool_use():
    for split in ("train", "test"):
        task = Spelling(split)
        for conv in task[:N]:
            assert conv["answer"] == str(conv["word"].lower().count(conv["letter"]))
            parts = conv["messages"][1]["content"]
            assert [p["type"] for p in parts] == ["text", "python", "python_output", "text"]
            assert calculate(parts[1]["text"]) == parts[2]["text"] == conv["answer"]
            assert task.reward(conv, parts) == 1.0
        conv = task[0]
        assert task.reward(conv, f"#### {conv['answer']}") == pytest.approx(0.8)  # right, but no tool
        assert task.reward(conv, f"#### {int(conv['answer']) + 1}") == 0.0


def test_spelling_splits_and_spell_mode():
    train_t = set(spelling.TEMPLATES["count"]["train"] + spelling.TEMPLATES["spell"]["train"])
    test_t = set(spelling.TEMPLATES["count"]["test"] + spelling.TEMPLATES["spell"]["test"])
    assert not train_t & test_t
    train_w = {c["word"] for c in Spelling("train", shared_vocab=False)[:N]}
    test_w = {c["word"] for c in Spelling("test", shared_vocab=False)[:N]}
    assert train_w and test_w and not train_w & test_w
    task = Spelling("train", mode="spell")
    conv = task[0]
    assert conv["answer"] == "-".join(conv["word"].lower()) and task.evaluate(conv, conv["messages"][1]["content"])


# -----------------------------------------------------------------------------
# identity


def test_identity_splits_and_keywords():
    train_q = {c["messages"][0]["content"] for c in Identity("train")[:N]}
    test_q = {c["messages"][0]["content"] for c in Identity("test")[:N]}
    assert train_q and test_q and not train_q & test_q
    task = Identity("test")
    for conv in task[:50]:
        assert task.evaluate(conv, conv["messages"][-1]["content"])
    who = next(c for c in task[:200] if c["topic"] == "who")
    assert not task.evaluate(who, "I am a helpful assistant.")


# -----------------------------------------------------------------------------
# synthif


def test_synthif_responses_satisfy_their_constraints():
    for split in ("train", "test"):
        task = SynthIF(split)
        for conv in task[:N]:
            assert 1 <= len(conv["constraints"]) <= 3
            assert task.reward(conv, conv["messages"][1]["content"]) == 1.0, conv


def test_synthif_splits_disjoint():
    for kind, phrases in synthif.PHRASES.items():
        assert not set(phrases["train"]) & set(phrases["test"]), kind
    for kind, ranges in synthif.NUMERIC_RANGES.items():
        (_, b), (c, _) = ranges["train"], ranges["test"]
        assert b < c, kind
    args = lambda split, kind: {c["arg"] for conv in SynthIF(split)[:N] for c in conv["constraints"] if c["kind"] == kind}
    assert max(args("train", "bullets")) < min(args("test", "bullets"))


@pytest.mark.parametrize("kind,arg,good,bad", [
    ("lowercase", None, "all quiet here.", "All quiet here."),
    ("include_word", "golden", "A golden sun.", "A goldenrod sun."),
    ("end_with", "the end", "Stories stop. The end.", "The end of stories."),
    ("bullets", 3, "- a\n- b\n- c", "- a\n- b\n- c\n- d"),
    ("no_commas", None, "Just words here", "Words, here"),
    ("json", None, '{"response": "hi"}', "response: hi"),
    ("max_words", 5, "one two three four five", "one two three four five six"),
    ("start_with", "bright", "Bright days ahead.", "Days are bright."),
])
def test_synthif_verifiers(kind, arg, good, bad):
    c = {"kind": kind, "arg": arg}
    assert check_constraint(c, good) and not check_constraint(c, bad)


def test_synthif_strips_thinking_and_scores_fractions():
    constraints = [{"kind": "lowercase", "arg": None}, {"kind": "no_commas", "arg": None}]
    assert score_constraints(constraints, "<|think_start|>Hmm, Let me think.<|think_end|>all good") == 1.0
    assert score_constraints(constraints, "All good") == 0.5
    assert score_constraints(constraints, "All, good") == 0.0
    parts = [{"type": "think", "text": "Caps, commas"}, {"type": "text", "text": "fine"}]
    assert score_constraints(constraints, parts) == 1.0
