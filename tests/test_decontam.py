"""
Tests of the 8-gram decontamination (nanochat/decontam.py) with planted evaluation items: exact copies,
copies with a prefix/suffix, changed numbers, paraphrases, short items, source flagging and the actions.

    python -m pytest tests/test_decontam.py -q
"""
import os
import random

import pytest

from nanochat.decontam import NgramIndex, decontaminate, find_contamination, summarize, tokens
from tasks.critique import ConversationList

QUESTION = ("A farmer has 17 cows and buys 23 more at the market on Monday, then sells 9 of them to a neighbor "
            "who lives across the river. How many cows does the farmer have at the end of the week?")  # 40 tokens


def conv(text):
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "#### 1"}]}


def task(*texts):
    return ConversationList([conv(t) for t in texts])


def best(train_texts, query):
    index = NgramIndex()
    for i, t in enumerate(train_texts):
        index.add(i, t)
    return index.best_match(query)


FILLER = ["Describe the weather in Paris today in one short sentence please.",
          "Write a haiku about autumn leaves falling slowly on a quiet pond."]

# -----------------------------------------------------------------------------
# what is caught


def test_exact_copy_caught():
    assert len(tokens(QUESTION)) == 40
    assert best(FILLER + [QUESTION], QUESTION) == (2, 1.0)


def test_copy_with_prefix_or_suffix_caught():
    # the training item wraps the eval question: every eval token is covered
    wrapped = "Solve this problem carefully and show your work. " + QUESTION + " Give only the number."
    assert best([wrapped], QUESTION) == (0, 1.0)
    # the eval item wraps a training question: 40 of 7 + 40 tokens covered
    doc, frac = best([QUESTION], "Here is a question from our quiz: " + QUESTION)
    assert doc == 0 and frac == pytest.approx(40 / 47)


def test_changed_numbers_partially():
    # one changed number breaks the 8 grams through it; the tokens before and after stay covered
    one = QUESTION.replace(" 9 ", " 8 ")
    assert best([QUESTION], one) == (0, 39 / 40)  # token 16 is the only uncovered one
    # ... but near the start nothing before it is covered: "23" is token 7, so tokens 0-7 are lost
    assert best([QUESTION], QUESTION.replace("23", "24")) == (0, 32 / 40)
    # numbers changed every 5 tokens: no 8-gram survives
    template = "{} red {} blue {} green {} gray {} tan boxes were stacked today"
    train, ev = template.format(1, 2, 3, 4, 5), template.format(6, 7, 8, 9, 10)
    assert best([train], ev) == (None, 0.0)
    # three changes bunched at the start: covered from token 3 to the end
    three = QUESTION.replace("A farmer has 17", "One farmer had 18")
    doc, frac = best([QUESTION], three)
    assert doc == 0 and frac == pytest.approx(36 / 40)


def test_paraphrase_not_caught():
    # a documented limitation: same meaning, different words -> no shared 8-gram
    para = ("On Monday a farmer who owns 17 cows purchases another 23 at the market and later sells nine to the "
            "neighbor across the river. At week's end, how many cows remain with the farmer?")
    assert best([QUESTION], para)[1] < 0.5


def test_short_items():
    train = ["Introduce yourself, please.", "Introduce yourself please and say where you were trained today."]
    assert best(train, "introduce YOURSELF please") == (0, 1.0)  # exact tokens: caught
    assert best(train, "Introduce yourself.") == (None, 0.0)  # a part of longer prompts: not caught
    assert best(train, "") == (None, 0.0)
    assert best(train, "!!!") == (None, 0.0)  # no tokens at all


def test_coverage_matches_naive_reference():
    rng = random.Random(0)
    vocab = "a b c d".split()  # a tiny vocabulary: many partial overlaps
    train = [" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 30))) for _ in range(20)]
    index = NgramIndex(max_postings=10**9)
    for i, t in enumerate(train):
        index.add(i, t)
    for _ in range(100):
        q = " ".join(rng.choice(vocab) for _ in range(rng.randint(8, 25)))
        qt = tokens(q)
        expected = 0.0
        for t in train:  # naive: positions of the query inside any 8-gram that also occurs in t
            tt = tokens(t)
            grams = {tuple(tt[i:i + 8]) for i in range(len(tt) - 7)}
            cov = {p for i in range(len(qt) - 7) if tuple(qt[i:i + 8]) in grams for p in range(i, i + 8)}
            expected = max(expected, len(cov) / len(qt))
        assert index.best_match(q)[1] == pytest.approx(expected)


# -----------------------------------------------------------------------------
# sources: flagging and the actions


def _eval_set(num_contaminated, size=100):
    planted = [f"Question number {i} asks about the planet {i} and its moons orbiting around it slowly." for i in range(size)]
    return planted, task(*planted)


def test_source_flagged_above_two_percent():
    planted, ev = _eval_set(100)
    clean = task(*FILLER)
    leaky = task(*planted[:3], "An unrelated training prompt about cooking pasta with garlic and olive oil.")
    edge = task(*planted[10:12])  # exactly 2%: not more than 2%
    sources = [("clean", clean), ("leaky", leaky), ("edge", edge)]
    out, report = decontaminate(sources, [("Planets", ev)], action="report")
    assert report["contaminated"] == {"leaky": {"Planets": 3}, "edge": {"Planets": 2}}
    assert report["flagged"] == {"leaky": {"Planets": 0.03}}
    assert report["removed"] == {} and [len(t) for _, t in out] == [2, 4, 2]


def test_drop_removes_exactly_the_matching_items():
    planted, ev = _eval_set(100)
    leaky = task("Unrelated prompt about cooking pasta with garlic, olive oil and fresh basil leaves.", planted[5],
                 "Another unrelated prompt about training a small dog to sit and stay in the yard.", planted[7],
                 "Once more: " + planted[5])  # a second copy must go too, not only the best match
    out, report = decontaminate([("leaky", leaky), ("clean", task(*FILLER))], [("Planets", ev)], action="drop")
    (name, kept), (_, clean) = out
    assert report["removed"] == {"leaky": 3} and report["contaminated"] == {"leaky": {"Planets": 2}}
    assert [c["messages"][0]["content"][:9] for c in kept] == ["Unrelated", "Another u"]
    assert len(clean) == 2
    assert "removed 3 (leaky 3)" in summarize(report) and "flagged: leaky (Planets 2.0%)" not in summarize(report)


def test_drop_source_removes_flagged_source_whole():
    planted, ev = _eval_set(100)
    leaky = task(*planted[:5], *FILLER)
    out, report = decontaminate([("leaky", leaky), ("clean", task(*FILLER))], [("Planets", ev)], action="drop-source")
    assert [name for name, _ in out] == ["clean"] and report["removed"] == {"leaky": 7}


def test_matched_positions_and_bad_action():
    planted, ev = _eval_set(10)
    matched, counts = find_contamination([("a", task(FILLER[0], planted[4]))], [("P", ev)])
    assert dict(matched) == {0: {1}} and dict(counts) == {("a", "P"): 1}
    with pytest.raises(ValueError, match="unknown decontamination action"):
        decontaminate([("a", task(*FILLER))], [("P", ev)], action="delete")


# -----------------------------------------------------------------------------
# the wiring into the chat stages' data loading


def test_stage_loading_drops_and_reports(tmp_path, monkeypatch):
    import nanochat.task_eval as task_eval
    from nanochat.chat_data import load_stage_data
    from nanochat.decontam import prompt_text
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    monkeypatch.setattr(task_eval, "DECONTAM_TASKS", ("MCQ",))  # one small eval set keeps the test fast
    mix = "mcq:300,synthmath12:20"
    full, _ = load_stage_data("sft", "train", "offline", mix, decontaminate="off")
    reported, desc_report = load_stage_data("sft", "train", "offline", mix, decontaminate="report")
    dropped, desc_drop = load_stage_data("sft", "train", "offline", mix, decontaminate="drop")
    assert len(full) == len(reported) == 320 and "report: removed 0" in desc_report
    removed = len(full) - len(dropped)
    assert removed > 0 and f"removed {removed} (mcq {removed})" in desc_drop  # the synthetic MCQ repeats items
    # reference: a naive check of every training prompt against every MCQ test item
    ev = [tokens(prompt_text(c)) for c in task_eval.get_eval_task("MCQ", "offline")]
    ev_grams = [{tuple(t[i:i + 8]) for i in range(len(t) - 7)} for t in ev]

    def leaks(conversation):
        tt = tokens(prompt_text(conversation))
        grams = {tuple(tt[i:i + 8]) for i in range(len(tt) - 7)}
        for t, eg in zip(ev, ev_grams):
            cov = {p for i in range(len(t) - 7) if tuple(t[i:i + 8]) in grams for p in range(i, i + 8)}
            if len(t) >= 8 and len(cov) / len(t) > 0.5 or len(t) < 8 and t == tt:
                return True
        return False

    assert sum(leaks(c) for c in full) == removed
    assert not any(leaks(c) for c in dropped)
    assert os.path.exists(tmp_path / "report" / "decontamination-sft.md")


def test_decontaminate_task_for_rl_prompts(tmp_path, monkeypatch):
    from nanochat.decontam import decontaminate_task
    from nanochat.task_eval import get_eval_task
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    leaked = get_eval_task("MCQ", "offline")[3]
    prompts = ConversationList([conv(FILLER[0]), leaked, conv(FILLER[1])])
    kept, summary = decontaminate_task(prompts, "rl-test", eval_names=["MCQ"], log=lambda *a: None)
    assert [c["messages"][0]["content"] for c in kept] == FILLER and summary == "drop: removed 1 (rl-test 1)"
