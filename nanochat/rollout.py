"""
Rollouts: sample a group of completions of one prompt with the engine and describe each one, the shared first
step of every on-policy recipe (DPO pair building in nanochat/preference.py, scripts/chat_distill.py; the
same pattern as scripts/chat_rl.py's rollout).

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
