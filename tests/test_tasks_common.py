"""
Tests for tasks/common.py: slicing, shuffling, mixtures and sequences (against plain Python lists as the
reference), the multiple-choice renderer and its scoring, and the data-source choice.

    python -m pytest tests/test_tasks_common.py -q
"""
import json
import os

import pytest

from tasks.common import LETTERS, Task, TaskMixture, TaskSequence, choose_source, evaluate_mc, render_mc

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "tasks", "mc_items.json")


class Numbers(Task):
    """A toy task: example i says the number base + i; right when the completion repeats it."""

    def __init__(self, n, base=0, **kwargs):
        super().__init__(**kwargs)
        self.n, self.base, self.name = n, base, f"numbers{base}"

    def num_examples(self):
        return self.n

    def get_example(self, index):
        return {"messages": [{"role": "user", "content": "say"}, {"role": "assistant", "content": str(self.base + index)}],
                "value": self.base + index}

    def evaluate(self, conversation, completion):
        return completion.strip() == str(conversation["value"])


def values(task):
    return [conv["value"] for conv in task]


# -----------------------------------------------------------------------------
# indexing, slicing, shuffling


def test_start_stop_step_and_slices_match_python_lists():
    reference = list(range(100))
    assert values(Numbers(100)) == reference
    assert values(Numbers(100, start=10, stop=50, step=3)) == reference[10:50:3]
    task = Numbers(100)
    assert values(task[5:20]) == reference[5:20]
    assert values(task[::-7]) == reference[::-7]
    assert values(task[10:60][5:10]) == reference[10:60][5:10]  # a view of a view
    assert task[-1]["value"] == 99 and len(task[90:200]) == 10
    with pytest.raises(IndexError):
        task[100]


def test_huge_synthetic_range_is_lazy():
    task = Numbers(10**12)  # an "unlimited" task: slicing must not materialize the indices
    assert len(task) == 10**12 and task[10**12 - 1]["value"] == 10**12 - 1
    assert values(task[10**11 : 10**11 + 3]) == [10**11, 10**11 + 1, 10**11 + 2]


def test_shuffle_is_a_deterministic_permutation():
    task = Numbers(200)
    a, b, c = values(task.shuffle(seed=1)), values(task.shuffle(seed=1)), values(task.shuffle(seed=2))
    assert a == b and a != c
    assert sorted(a) == list(range(200)) and a != list(range(200))
    assert values(task) == list(range(200))  # the original is untouched
    assert sorted(values(task[50:100].shuffle(3))) == list(range(50, 100))


# -----------------------------------------------------------------------------
# combining tasks


def test_sequence_concatenates_and_routes_scoring():
    seq = TaskSequence([Numbers(3, base=100), Numbers(2, base=200)])
    assert values(seq) == [100, 101, 102, 200, 201]
    conv = seq[3]
    assert conv["task_index"] == 1 and conv["task"] == "numbers200"
    assert seq.evaluate(conv, "200") and not seq.evaluate(conv, "201")
    assert seq.reward(conv, "200") == 1.0


def test_mixture_is_a_fixed_shuffle_of_the_union_with_upsampling():
    a, b = Numbers(30, base=0), Numbers(10, base=1000)
    mix = TaskMixture([a, b, b], seed=7)  # b listed twice: upsampled
    got = values(mix)
    assert sorted(got) == sorted(list(range(30)) + 2 * list(range(1000, 1010)))
    assert got == values(TaskMixture([a, b, b], seed=7)) != values(TaskMixture([a, b, b], seed=8))
    # both tasks are spread through the stream, not one after the other
    first_half = got[: len(got) // 2]
    assert any(v >= 1000 for v in first_half) and any(v < 1000 for v in first_half)
    for i in range(len(mix)):
        conv = mix[i]
        assert mix.evaluate(conv, str(conv["value"]))


def test_mixture_rejects_foreign_conversations():
    mix = TaskMixture([Numbers(3)])
    with pytest.raises(ValueError, match="task_index"):
        mix.evaluate(Numbers(3)[0], "0")


# -----------------------------------------------------------------------------
# multiple choice


def test_render_mc_layout_and_answer():
    conv = render_mc("What is 2 + 2?", ["3", "4", "5", "22"], 1, subject="math")
    user, assistant = conv["messages"]
    assert user["role"] == "user" and assistant == {"role": "assistant", "content": "B"}
    assert user["content"] == "What is 2 + 2?\n\nA. 3\nB. 4\nC. 5\nD. 22\n\nAnswer with the letter of the correct choice."
    assert conv["letters"] == ["A", "B", "C", "D"] and conv["answer"] == "B" and conv["subject"] == "math"
    assert render_mc("q", ["x", "y", "z"], 2)["letters"] == list(LETTERS[:3])


def test_render_mc_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="answer index 4"):
        render_mc("q", ["a", "b"], 4)
    with pytest.raises(ValueError, match="letters"):
        render_mc("q", ["a", "b"], 0, letters=["A"])


def test_categorical_scoring_on_fixture_with_known_answers():
    with open(FIXTURE) as f:
        items = json.load(f)
    for item in items:
        conv = render_mc(item["question"], item["choices"], item["answer"])
        gold = conv["answer"]
        assert gold == LETTERS[item["answer"]]
        for completion in (gold, f" {gold}", f"{gold}.", f"{gold}) {item['choices'][item['answer']]}"):
            assert evaluate_mc(conv, completion), completion
        for letter in conv["letters"]:
            if letter != gold:
                assert not evaluate_mc(conv, letter)
    # a word that merely starts with the letter is not an answer
    assert not evaluate_mc(render_mc("q", ["x", "y"], 0), "Absolutely")


def test_choose_source():
    assert choose_source("offline", "X") == "offline" and choose_source("hf", "X") == "hf"
    with pytest.raises(ValueError, match="expected 'auto'"):
        choose_source("internet", "X")
