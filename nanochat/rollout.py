"""
Rollouts: sample a group of completions of one prompt with the engine and describe each one, the shared first
step of every on-policy recipe (scripts/chat_rl.py, scripts/chat_distill.py, DPO pair building in
nanochat/preference.py), and where the prompts come from.

    train, held = prompt_tasks("synthmath", task_seed=1, eval_split="test")   # training prompts, held-out set
    for index, seed in step_prompts(step, prompts_per_step=16, num_prompts=len(train), seed=42):
        group = sample_group(engine, tokenizer, train[index], num_samples=16, max_new_tokens=256, seed=seed)

    group = sample_group(engine, tokenizer, conversation, num_samples=4, max_new_tokens=128, seed=0)
    group.rows, group.masks     # prompt + completion ids (stop token included) and their 0/1 masks
    group.texts, group.finished # decoded completions (stop token dropped), did each end its turn itself
    completion_parts(tokenizer, ids)  # completion ids -> the tokenizer's assistant parts (tool calls kept)

The masks follow the mask rule of nanochat/policy.py: 1 only on tokens the model sampled (forced tool outputs
and the prompt are 0), so `collate(group.rows, group.masks)` is ready for any policy-gradient loss.
"""
from dataclasses import dataclass

import torch

from nanochat.chat_stream import TurnDecoder

# -----------------------------------------------------------------------------
# the prompts


def prompt_tasks(name, task_seed=1, eval_split="test", **synthmath_kw):
    """
    (training prompts, held-out problems) of a recipe with a verifiable reward. name: synthmath | synthif |
    gsm8k. The synthetic training sets are drawn with task_seed (SFT uses seed 0, so the recipe sees fresh
    problems); eval_split "test" is the task's test split (disjoint templates and number ranges), "fresh" unseen
    problems of the training distribution (seed task_seed + 1000). GSM8K has only its test split to hold out,
    and its train split is shuffled with task_seed. synthmath_kw (min_steps, max_steps, max_number) go to
    SynthMath; the other tasks ignore them.
    """
    if eval_split not in ("test", "fresh"):
        raise ValueError(f"eval split {eval_split!r}: use 'test' or 'fresh'")
    if name == "synthmath":
        from tasks.synthmath import SynthMath
        train = SynthMath("train", size=1_000_000, seed=task_seed, **synthmath_kw)
        held = (SynthMath("test", size=10_000, seed=0, **synthmath_kw) if eval_split == "test"
                else SynthMath("train", size=10_000, seed=task_seed + 1000, **synthmath_kw))
        return train, held
    if name == "synthif":
        from tasks.synthif import SynthIF
        train = SynthIF("train", size=1_000_000, seed=task_seed)
        held = (SynthIF("test", size=10_000, seed=0) if eval_split == "test"
                else SynthIF("train", size=10_000, seed=task_seed + 1000))
        return train, held
    if name == "gsm8k":
        from tasks.gsm8k import GSM8K
        return GSM8K("train").shuffle(task_seed), GSM8K("test")
    raise ValueError(f"task {name!r}: expected synthmath, synthif or gsm8k")


def step_prompts(step, prompts_per_step, num_prompts, seed, rank=0, world_size=1):
    """
    This rank's prompts of optimizer step `step`: [(index into the task, rollout seed)]. Step s takes prompts
    s*P .. s*P + P-1 of the task (wrapping around), each rank a contiguous slice of P / world_size. The seed
    is a function of the step and the prompt alone, so a run resumed at step s samples exactly what an
    uninterrupted one would have.
    """
    local = prompts_per_step // world_size
    first = step * prompts_per_step + rank * local
    indices = [(first + i) % num_prompts for i in range(local)]
    return [(index, seed + 1_000_003 * step + index) for index in indices]


# -----------------------------------------------------------------------------
# a group of samples


@dataclass
class Group:
    prompt: list      # the prompt ids (ends with <|assistant_start|>)
    rows: list        # G lists: prompt + completion ids, the stop token included when sampled
    masks: list       # G lists of 0/1, 1 = sampled by the model
    completions: list  # G lists: the completion ids alone (stop token included when sampled)
    texts: list       # G decoded completions without the stop token (tool calls as special-token text)
    finished: list    # G bools: the completion ended with <|assistant_end|>


@torch.no_grad()
def sample_group(engine, tokenizer, conversation, num_samples, max_new_tokens, temperature=1.0, top_k=None, seed=0):
    """G sampled completions of the conversation's next assistant turn (the model is put in eval mode and back)."""
    prompt = tokenizer.render_for_completion(conversation)
    model = engine.model
    was_training = model.training
    model.eval()
    rows, masks = engine.generate_batch(prompt, num_samples=num_samples, max_tokens=max_new_tokens,
                                        temperature=temperature, top_k=top_k or None, seed=seed, include_stop=True)
    model.train(was_training)
    assistant_end = tokenizer.encode_special("<|assistant_end|>")
    completions = [row[len(prompt):] for row in rows]
    finished = [bool(c) and c[-1] == assistant_end for c in completions]
    texts = [tokenizer.decode(c[:-1] if done else c) for c, done in zip(completions, finished)]
    return Group(prompt, rows, masks, completions, texts, finished)


def completion_parts(tokenizer, ids):
    """Completion ids -> [{"type": "text"|"python"|"python_output"|"think", "text": ...}] (stop token dropped)."""
    turn = TurnDecoder(tokenizer)
    for token in ids:
        turn.push(token)
    turn.finish()
    return turn.parts
