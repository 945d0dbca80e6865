"""
The Task interface shared by every chat dataset, real or synthetic, and the two ways to combine tasks.

A Task is a finite, indexable list of conversations:

    task = ARC("ARC-Easy", split="validation")
    len(task), task[0]                      # a conversation dict (see below)
    task[10:20], task.shuffle(seed=1)       # cheap views, the data is never copied
    task.evaluate(conv, "B")                # -> bool, was the completion right?
    task.reward(conv, "B")                  # -> float in [0, 1], for RL on verifiable tasks

A conversation is `{"messages": [{"role": ..., "content": str | list[part]}], ...}` with parts
`{"type": "text"|"python"|"python_output"|"think", "text": str}`. Besides "messages" a conversation carries
what its verifier needs ("letters" and "answer" for multiple choice, "answer" for math, "constraints" for
instruction following, ...), so that evaluate/reward depend on the conversation and the completion only: a
conversation can be shipped to another process, saved as JSON, or scored from inside a TaskMixture.

Nothing here knows about tokenizers or training. Run the tests with
    python -m pytest tests/test_tasks_common.py -q
"""
import copy
import socket

import numpy as np

from nanochat.common import print0

# -----------------------------------------------------------------------------
# the Task base class


class Task:
    """
    Subclasses set `eval_type` ("categorical" or "generative"), implement `num_examples()` and
    `get_example(index)`, and override `evaluate` (and `reward` when the score is not just 0/1).
    `start`, `stop`, `step` select a range of the underlying examples, like a slice.
    """

    eval_type = "generative"
    name = "task"

    def __init__(self, start=0, stop=None, step=1):
        self._range_args = (start, stop, step)
        self._indices = None  # built lazily: num_examples() may need the data loaded first

    # --- to implement in subclasses ---

    def num_examples(self):
        raise NotImplementedError

    def get_example(self, index):
        raise NotImplementedError

    def evaluate(self, conversation, completion):
        raise NotImplementedError(f"{type(self).__name__} has no automatic evaluation")

    def reward(self, conversation, completion):
        return float(self.evaluate(conversation, completion))

    # --- indexing, slicing, shuffling ---

    @property
    def indices(self):
        # a range() until shuffled: slicing a range is lazy, so an "unlimited" synthetic task costs nothing
        if self._indices is None:
            self._indices = range(self.num_examples())[slice(*self._range_args)]
        return self._indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            view = copy.copy(self)
            view._indices = self.indices[i]
            return view
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {type(self).__name__} of length {len(self)}")
        conversation = self.get_example(self.indices[i])
        conversation.setdefault("task", self.name)
        return conversation

    def get(self, i):
        return self[i]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def shuffle(self, seed=0):
        """A view with the examples in a deterministic random order (same seed, same order, any machine)."""
        n = len(self)
        if n > 50_000_000:
            raise ValueError(f"shuffle of {n} examples would need a {n}-long permutation; slice the task first")
        view = copy.copy(self)
        perm = np.random.default_rng(seed).permutation(n)
        view._indices = [self.indices[int(j)] for j in perm]
        return view


# -----------------------------------------------------------------------------
# combining tasks


class TaskSequence(Task):
    """Tasks one after another, in order (a curriculum). Scoring goes to the task the example came from."""

    name = "sequence"

    def __init__(self, tasks, **kwargs):
        super().__init__(**kwargs)
        if not tasks:
            raise ValueError("TaskSequence needs at least one task")
        self.tasks = list(tasks)
        self.offsets = np.cumsum([0] + [len(t) for t in self.tasks])  # task k owns [offsets[k], offsets[k+1])

    def num_examples(self):
        return int(self.offsets[-1])

    def locate(self, index):
        """(task number, index inside that task) of a global example index."""
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return k, index - int(self.offsets[k])

    def get_example(self, index):
        k, j = self.locate(index)
        conversation = self.tasks[k][j]
        conversation["task_index"] = k  # which sub-task to ask when scoring
        return conversation

    def _owner(self, conversation):
        if "task_index" not in conversation:
            raise ValueError("this conversation did not come from this mixture/sequence (no 'task_index' key)")
        return self.tasks[conversation["task_index"]]

    def evaluate(self, conversation, completion):
        return self._owner(conversation).evaluate(conversation, completion)

    def reward(self, conversation, completion):
        return self._owner(conversation).reward(conversation, completion)


class TaskMixture(TaskSequence):
    """
    The union of tasks, shuffled together once with a fixed seed, so a training stream sees every task
    throughout. List a task twice to upsample it (e.g. a small identity set).
    """

    name = "mixture"

    def __init__(self, tasks, seed=42, **kwargs):
        super().__init__(tasks, **kwargs)
        n = int(self.offsets[-1])
        if n > 50_000_000:
            raise ValueError(f"a mixture of {n} examples is too large to shuffle; slice the big tasks first")
        self.order = np.random.default_rng(seed).permutation(n)

    def get_example(self, index):
        return super().get_example(int(self.order[index]))


# -----------------------------------------------------------------------------
# rendering: the ONE place a multiple-choice item becomes a conversation

LETTERS = "ABCDEFGHIJ"


def render_mc(question, choices, answer_index, letters=None, **extra):
    """
    A multiple-choice item as a conversation: the user sees the question and the lettered choices, the
    assistant answers with the bare letter. Each choice line starts with its letter so that the answer token
    ("A", the first token of a line) is the same token the model saw next to the choice. The conversation
    keeps `letters` (what chat_eval compares logits of) and `answer` (the gold letter).
    """
    letters = list(letters or LETTERS[: len(choices)])
    if len(letters) != len(choices):
        raise ValueError(f"{len(choices)} choices but {len(letters)} letters")
    if not 0 <= answer_index < len(choices):
        raise ValueError(f"answer index {answer_index} is not one of the {len(choices)} choices")
    lines = [question.strip(), ""]
    lines += [f"{letter}. {str(choice).strip()}" for letter, choice in zip(letters, choices)]
    lines += ["", "Answer with the letter of the correct choice."]
    return {
        "messages": [
            {"role": "user", "content": "\n".join(lines)},
            {"role": "assistant", "content": letters[answer_index]},
        ],
        "letters": letters,
        "answer": letters[answer_index],
        **extra,
    }


def evaluate_mc(conversation, completion):
    """A categorical answer is right when the completion (stripped, first token-ish) is the gold letter."""
    text = completion_text(completion).strip()
    return text[:1] == conversation["answer"] and (len(text) == 1 or not text[1].isalnum())


def chat(user, assistant, **extra):
    """The simplest conversation: one user turn, one assistant turn (assistant: a string or a list of parts)."""
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], **extra}


def completion_text(completion):
    """A completion as a string: strings pass through; a list of parts is joined (tool parts as their text)."""
    if isinstance(completion, str):
        return completion
    return "".join(part["text"] for part in completion)


def last_assistant_content(conversation):
    for message in reversed(conversation["messages"]):
        if message["role"] == "assistant":
            return message["content"]
    raise ValueError("conversation has no assistant message")


# -----------------------------------------------------------------------------
# data sources: Hugging Face online, wheels offline; chosen once, clearly

_HF_REACHABLE = None


def hf_reachable(timeout=3.0):
    """Can we reach the Hugging Face Hub? Asked once per process (a TCP connect, no data), then cached."""
    global _HF_REACHABLE  # a process-wide fact, not model state
    if _HF_REACHABLE is None:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            _HF_REACHABLE = True
        except OSError:
            _HF_REACHABLE = False
    return _HF_REACHABLE


def choose_source(source, name):
    """'hf' or 'offline' for a loader given source='auto'|'hf'|'offline'; announces the choice once."""
    if source not in ("auto", "hf", "offline"):
        raise ValueError(f"source={source!r}: expected 'auto', 'hf' or 'offline'")
    if source == "auto":
        source = "hf" if hf_reachable() else "offline"
        print0(f"[tasks] {name}: Hugging Face Hub {'reachable' if source == 'hf' else 'unreachable'}, using {source} data")
    return source


def load_hf(path, name=None, split="train"):
    """datasets.load_dataset with a one-sentence error instead of a long traceback when it cannot work."""
    from datasets import load_dataset  # imported here: offline users never pay for it

    try:
        return load_dataset(path, name, split=split)
    except Exception as e:  # network errors, missing configs and splits all land here
        raise RuntimeError(
            f"could not load {path} ({name}, split {split}) from Hugging Face: {type(e).__name__}: {str(e)[:200]}. "
            f"Fix: check the network, or pass source='offline' where an offline copy exists"
        ) from None


def no_offline_split(name, split, available):
    """The error for a split that has no offline copy."""
    return ValueError(
        f"{name} split {split!r} is not available offline (offline splits: {', '.join(available)}); "
        f"use one of those, or go online with source='hf'"
    )
