"""
Tests of the prompt side of nanochat/rollout.py: which prompts and seeds a step samples (step_prompts: the
same over any number of ranks, and resumable), and the (train, held-out) task pairs of prompt_tasks.
Run: python -m pytest tests/test_rollout.py -q
"""
import pytest

from nanochat.rollout import prompt_tasks, step_prompts


def test_step_prompts_by_hand():
    # step 2 of 3 prompts per step over a 7-prompt task: prompts 6, 7 -> 0, 8 -> 1 (wrapped around)
    assert step_prompts(2, 3, 7, seed=10) == [(6, 10 + 2 * 1_000_003 + 6), (0, 10 + 2 * 1_000_003),
                                              (1, 10 + 2 * 1_000_003 + 1)]


def test_step_prompts_ranks_split_the_single_process_list():
    for step in range(5):
        whole = step_prompts(step, 8, 13, seed=42)
        parts = [step_prompts(step, 8, 13, seed=42, rank=r, world_size=4) for r in range(4)]
        assert all(len(p) == 2 for p in parts)
        assert sum(parts, []) == whole
    # consecutive steps take consecutive prompts: no prompt is skipped or repeated within an epoch
    first_epoch = [i for step in range(3) for i, _ in step_prompts(step, 4, 12, seed=0)]
    assert sorted(first_epoch) == list(range(12))


def test_prompt_tasks_splits_and_seeds():
    train, held = prompt_tasks("synthmath", task_seed=3, eval_split="test", min_steps=1, max_steps=2)
    assert (train.split, train.seed, held.split, held.seed) == ("train", 3, "test", 0)
    train, fresh = prompt_tasks("synthmath", task_seed=3, eval_split="fresh", min_steps=1, max_steps=2)
    assert (fresh.split, fresh.seed) == ("train", 1003)
    assert train[0] != fresh[0]  # a fresh problem, not a training one
    train, held = prompt_tasks("synthif", task_seed=3, eval_split="fresh", min_steps=1)  # synthmath_kw ignored
    assert len(train) == 1_000_000 and len(held) == 10_000
    with pytest.raises(ValueError, match="expected synthmath, synthif or gsm8k"):
        prompt_tasks("mmlu")
    with pytest.raises(ValueError, match="'test' or 'fresh'"):
        prompt_tasks("synthmath", eval_split="val")
