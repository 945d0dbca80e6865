"""
Chat evaluation on tasks: categorical tasks by the logits of the answer letters, generative tasks by sampling
through the Engine and scoring with the task's own verifier. Used by scripts/chat_eval.py, by the periodic
evals of mid/SFT training (nanochat/sft.py) and later by the RL family for held-out evaluations.

- Categorical (ARC, MMLU, MCQ, ...): the prompt is the conversation up to <|assistant_start|>; one forward
  pass over a right-padded batch of prompts, read the logits at each prompt's last position, keep only the
  item's letters (A..D, or however many choices it has) and take the argmax. No sampling, no parsing: the
  model cannot "miss the format", so small models get a meaningful score early.
- Generative (GSM8K, SynthMath with the calculator tool, HumanEval through the sandbox, ...): sample
  `num_samples` completions per problem with the Engine (tools on) and ask `task.evaluate(conversation,
  completion_text)`. An item counts as solved when any sample is right: pass@k with k = num_samples
  (with k = 1 and temperature 0 that is greedy accuracy).
- ChatCORE: the mean over tasks of the centered accuracy (acc - baseline) / (1 - baseline), baseline =
  chance (the mean of 1/num_choices over the items) for categorical tasks and 0 for generative ones; only
  when every task ran on its full set (a ChatCORE from slices would not be comparable between runs).

Every result keeps per-item correctness (in task order), so two checkpoints evaluated on the same items can
be compared item by item with paired standard errors (`paired_difference`).

Under torchrun every rank takes items i with i % world_size == rank; results are summed over ranks.

    results = evaluate_tasks(model, tokenizer, ["ARC-Easy", "SynthMath"], max_problems=100)

Run the tests with `python -m pytest tests/test_task_eval.py -q`.
"""
import math
import time

import torch
import torch.distributed as dist

from nanochat.common import get_dist_info, print0

# -----------------------------------------------------------------------------
# the evaluation tasks by name: test / held-out splits only

SYNTH_EVAL_SIZE = 500  # held-out items of each synthetic task (>= 400: issue 8 wants paired SEs on 400+)


def _make(name, source):
    if name in ("ARC-Easy", "ARC-Challenge"):
        from tasks.arc import ARC
        return ARC(name, "test", source=source)
    if name == "MMLU":
        from tasks.mmlu import MMLU
        return MMLU("all", "test", source=source)
    if name == "GSM8K":
        from tasks.gsm8k import GSM8K
        return GSM8K("test", source=source)
    if name == "HumanEval":
        from tasks.humaneval import HumanEval
        return HumanEval(source=source)
    if name == "MBPP":
        from tasks.mbpp import MBPP
        return MBPP("test", source=source)
    if name in ("SynthMath", "SynthMath12"):
        from tasks.synthmath import SynthMath
        steps = dict(min_steps=1, max_steps=2) if name == "SynthMath12" else {}
        return SynthMath("test", size=SYNTH_EVAL_SIZE, **steps)
    if name == "SynthMathFresh":
        # unseen problems of the training distribution: the held-out set of chat_rl's default recipe
        # (--task-seed 1 --eval-split fresh --min-steps 2 --max-steps 4), so SFT, SFT-from-scratch and RL are
        # scored on the very same problems. tests/test_task_eval.py checks none of them is a training item.
        from nanochat.rollout import prompt_tasks
        return prompt_tasks("synthmath", task_seed=1, eval_split="fresh", min_steps=2, max_steps=4)[1][:SYNTH_EVAL_SIZE]
    if name == "SynthIF":
        from tasks.synthif import SynthIF
        return SynthIF("test", size=SYNTH_EVAL_SIZE)
    if name == "Spelling":
        from tasks.spelling import Spelling
        return Spelling("test", size=SYNTH_EVAL_SIZE)
    if name == "MCQ":
        from tasks.mcq import MCQ
        return MCQ("test", size=SYNTH_EVAL_SIZE)
    if name == "Identity":
        from tasks.identity import Identity
        return Identity("test", size=SYNTH_EVAL_SIZE)
    raise ValueError(f"unknown evaluation task {name!r}; choose from {', '.join(EVAL_TASKS)}")


EVAL_TASKS = ("ARC-Easy", "ARC-Challenge", "MMLU", "GSM8K", "HumanEval", "MBPP", "SynthMath", "SynthMath12",
              "SynthMathFresh", "SynthIF", "Spelling", "MCQ", "Identity")
CHATCORE_TASKS = "ARC-Easy|ARC-Challenge|MMLU|GSM8K|HumanEval|Spelling"  # the default -a of chat_eval
# what training data is decontaminated against (nanochat/decontam.py): every set but SynthMathFresh, which IS
# the training distribution by design (same templates, so 8-grams overlap everywhere; dropping the training
# items that share them cut the offline SFT model's SynthMathFresh accuracy from 14.5% to 2.4%). Its problems
# are checked to be no training item by tests/test_task_eval.py instead.
DECONTAM_TASKS = tuple(t for t in EVAL_TASKS if t != "SynthMathFresh")


def get_eval_task(name, source="auto"):
    from tasks.common import choose_source
    needs_source = name in ("ARC-Easy", "ARC-Challenge", "MMLU", "GSM8K", "HumanEval", "MBPP")
    return _make(name, choose_source(source, name) if needs_source else source)


# -----------------------------------------------------------------------------
# categorical: logits of the letters at the answer position


def _letter_ids(tokenizer, letters):
    ids = []
    for letter in letters:
        enc = tokenizer.encode(letter)
        if len(enc) != 1:
            raise ValueError(f"answer letter {letter!r} is {len(enc)} tokens with this tokenizer; categorical "
                             f"scoring needs single-token letters (retrain the tokenizer on more text)")
        ids.append(enc[0])
    return ids


@torch.no_grad()
def score_categorical(model, tokenizer, conversations, batch_size=8):
    """Per conversation, the index (into its "letters") of the letter with the highest logit."""
    device = _device(model)
    pad = tokenizer.get_bos_token_id()
    preds = []
    for start in range(0, len(conversations), batch_size):
        batch = conversations[start:start + batch_size]
        prompts = [tokenizer.render_for_completion(c) for c in batch]
        T = max(len(p) for p in prompts)
        ids = torch.full((len(batch), T), pad, dtype=torch.long)
        for i, p in enumerate(prompts):  # right padding: causal attention keeps the real tokens unaffected
            ids[i, :len(p)] = torch.tensor(p)
        logits = model(ids.to(device))  # (B, T, V)
        for i, (p, conv) in enumerate(zip(prompts, batch)):
            letter_ids = torch.tensor(_letter_ids(tokenizer, conv["letters"]), device=device)
            preds.append(int(logits[i, len(p) - 1, letter_ids].argmax()))  # restricted to this item's letters
    return preds


# -----------------------------------------------------------------------------
# generative: sample with the engine, score with the task


def sample_completions(engine, tokenizer, conversation, num_samples=1, max_new_tokens=256, temperature=0.0,
                       top_k=None, seed=0):
    """The text of num_samples sampled assistant turns (tool calls and outputs kept as their special tokens)."""
    prompt = tokenizer.render_for_completion(conversation)
    results, _ = engine.generate_batch(prompt, num_samples=num_samples, max_tokens=max_new_tokens,
                                       temperature=temperature, top_k=top_k, seed=seed)
    return [tokenizer.decode(row[len(prompt):]) for row in results]


# -----------------------------------------------------------------------------
# one task, all tasks


def _device(model):
    return model.get_device() if hasattr(model, "get_device") else next(model.parameters()).device


def _all_sum(t):
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def evaluate_task(model, tokenizer, task, name=None, max_problems=None, batch_size=8, num_samples=1,
                  max_new_tokens=256, temperature=0.0, top_k=None, seed=0, engine=None):
    """
    Evaluate one Task. Returns a dict: accuracy, stderr, n, full (did the whole set run), eval_type,
    baseline (chance), centered, and items: per item {index, correct, ...} in task order.
    """
    from nanochat.engine import Engine
    _, rank, _, world = get_dist_info()
    name = name or getattr(task, "name", type(task).__name__)
    n = len(task) if max_problems is None else min(max_problems, len(task))
    if n == 0:
        raise ValueError(f"{name}: nothing to evaluate (0 problems)")
    mine = list(range(rank, n, world))
    conversations = [task[i] for i in mine]
    # per item, summed over ranks: [correct, samples right, chance, predicted letter + 1 (0: generative)]
    table = torch.zeros((n, 4), dtype=torch.float64)
    t0 = time.time()
    was_training = model.training
    model.eval()
    if task.eval_type == "categorical":
        preds = score_categorical(model, tokenizer, conversations, batch_size)
        for i, conv, p in zip(mine, conversations, preds):
            right = conv["letters"][p] == conv["answer"]
            table[i] = torch.tensor([float(right), float(right), 1.0 / len(conv["letters"]), p + 1])
    else:
        engine = engine or Engine(model, tokenizer)
        for i, conv in zip(mine, conversations):
            texts = sample_completions(engine, tokenizer, conv, num_samples, max_new_tokens, temperature, top_k,
                                       seed=seed + i)
            num_right = sum(bool(task.evaluate(conv, t)) for t in texts)
            table[i] = torch.tensor([float(num_right > 0), float(num_right), 0.0, 0.0])
    model.train(was_training)
    table = _all_sum(table.to(_device(model))).cpu()
    correct = table[:, 0]
    acc = correct.mean().item()
    baseline = table[:, 2].mean().item()
    result = dict(
        task=name, eval_type=task.eval_type, n=n, full=n == len(task), accuracy=acc,
        stderr=math.sqrt(acc * (1 - acc) / n) if n > 1 else float("nan"),
        baseline=baseline, centered=(acc - baseline) / (1 - baseline),
        num_samples=num_samples if task.eval_type == "generative" else 1, seconds=time.time() - t0,
        items=[],
    )
    if task.eval_type == "generative" and num_samples > 1:
        result["pass@1"] = (table[:, 1].sum() / (n * num_samples)).item()  # mean over all samples
    for i in range(n):
        item = {"index": i, "correct": int(correct[i])}
        if task.eval_type == "categorical":
            item["predicted"] = int(table[i, 3]) - 1
        elif num_samples > 1:
            item["num_correct"] = int(table[i, 1])
        result["items"].append(item)
    return result


def evaluate_tasks(model, tokenizer, names, source="auto", log=print0, **kwargs):
    """{name: result} for several tasks (names or (name, Task) pairs), plus "ChatCORE" when all ran fully."""
    results = {}
    for entry in names:
        name, task = entry if isinstance(entry, tuple) else (entry, get_eval_task(entry, source))
        res = evaluate_task(model, tokenizer, task, name=name, **kwargs)
        log(f"  {name}: {res['accuracy']:.4f} +- {res['stderr']:.4f} ({res['n']} problems"
            f"{'' if res['full'] else ', a slice'}, {res['seconds']:.1f}s)")
        results[name] = res
    chatcore = chat_core(results)
    if chatcore is not None:
        log(f"  ChatCORE over {len(results)} tasks: {chatcore:.4f}")
    return results, chatcore


def chat_core(results):
    """Mean centered accuracy over the tasks, or None unless every ChatCORE task ran on its full set (a
    single synthetic task evaluated in full is not a ChatCORE)."""
    if not set(CHATCORE_TASKS.split("|")) <= set(results) or not all(r["full"] for r in results.values()):
        return None
    return sum(r["centered"] for r in results.values()) / len(results)


# -----------------------------------------------------------------------------
# comparing two evaluations of the same items


def paired_difference(items_a, items_b):
    """
    (mean of b - a, its paired standard error) over items evaluated by both runs (matched by index). Pairing
    removes the variance of item difficulty that two independent standard errors would double count.
    """
    a = {it["index"]: it["correct"] for it in items_a}
    b = {it["index"]: it["correct"] for it in items_b}
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        raise ValueError("paired comparison needs at least 2 items evaluated by both runs")
    d = torch.tensor([b[i] - a[i] for i in common], dtype=torch.float64)
    return d.mean().item(), (d.std(unbiased=True) / math.sqrt(len(d))).item()
