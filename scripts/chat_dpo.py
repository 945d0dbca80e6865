"""
Direct Preference Optimization of a chat model on preference pairs built on-policy (Tulu 3 recipe).

1) Pairs: for each training prompt, sample --num-responses responses from a pool of checkpoints that
   includes the policy itself (--pool adds others), score each with the judge (task verifier + format and
   length rules, 1-5 per aspect, nanochat/preference.py), chosen = best mean score, rejected = a random lower
   one. Or load pairs from a JSONL file (--pairs-file); --pairs-out saves the built ones for reuse.
2) The reference is the starting policy, frozen: its log-probs of every pair are computed once and cached.
3) Train on the pairs with one of three losses (nanochat/policy.py):
    --loss dpo        standard DPO, beta 0.1 (arXiv 2305.18290)
    --loss dpo-norm   length-normalized DPO, beta 5: log-ratios averaged per token (Tulu 3, arXiv 2411.15124)
    --loss sft        plain SFT on the chosen responses (the baseline: is the "rejected" side worth anything?)
   Logged per step: loss, reward accuracy (chosen's implicit reward above rejected's), reward margin, mean
   length of chosen and rejected responses.
4) Held-out: greedy answers of the starting model and of the trained one on the same prompts, scored by the
   same judge: mean judge score, accuracy (paired difference) and mean response length (the length drift).

    python -m scripts.chat_dpo                                         # CPU: SynthMath pairs from the latest sft
    python -m scripts.chat_dpo --pool rl --num-prompts 512 --loss dpo-norm
    python -m scripts.chat_dpo --pairs-out pairs.jsonl --num-steps 0    # only build and save pairs
    python -m scripts.chat_dpo --pairs-file pairs.jsonl --loss dpo      # train on saved (or hand-made) pairs
    python -m scripts.chat_dpo --device-type cuda --num-prompts 4096 --device-batch-size 32   # one GPU

Single process (the pair building and the cached reference are per process; DDP is not wired).
Outputs: checkpoint in <base_dir>/checkpoints/dpo/<tag>/, metrics in <base_dir>/runs/<run>/metrics.jsonl,
the final numbers in <base_dir>/runs/<run>/result.json, the "Chat DPO" report section. docs/dpo.md has the
experiment (DPO vs DPO-norm vs SFT-on-chosen) and its numbers.
"""
import os
import json
import math
import time
import random
import argparse

import torch

from nanochat.common import compute_init, compute_cleanup, print0, MetricsLogger, require_nonnegative, require_positive
from nanochat.checkpoint import checkpoint_dir, load_model, save_checkpoint
from nanochat.engine import Engine
from nanochat.policy import (dpo_loss, sequence_logprob_stats, token_logprobs, tokenizer_mismatch, add_optimizer_args,
                             make_optimizer, set_lr_multiplier)
from nanochat.preference import (VerifierJudge, CheckpointJudge, build_pairs, save_pairs, load_pairs, pair_batch,
                                 response_tokens, judge_eval)
from nanochat.rollout import prompt_tasks
from nanochat.task_eval import paired_difference
from tasks import synthmath

LOSSES = {"dpo": 0.1, "dpo-norm": 5.0, "sft": None}  # loss -> its default beta

# -----------------------------------------------------------------------------
# arguments

parser = argparse.ArgumentParser(description="DPO / length-normalized DPO on on-policy preference pairs.")
parser.add_argument("--source", type=str, default="sft", help="stage of the starting checkpoint (the policy and the reference)")
parser.add_argument("--model-tag", type=str, default=None, help="tag of the starting checkpoint (default: the newest of --source)")
parser.add_argument("--model-step", type=int, default=None, help="step of the starting checkpoint (default: its latest)")
parser.add_argument("--output-tag", type=str, default=None, help="tag of the dpo checkpoint (default: the input tag)")
# task and pairs
parser.add_argument("--task", choices=["synthmath", "synthif"], default="synthmath", help="prompts, verifier and held-out set")
parser.add_argument("--min-steps", type=int, default=1, help="SynthMath: fewest calculator steps of a problem")
parser.add_argument("--max-steps", type=int, default=4, help="SynthMath: most calculator steps of a problem")
parser.add_argument("--task-seed", type=int, default=1, help="seed of the training prompts (SFT uses 0: pairs come from fresh prompts)")
parser.add_argument("--eval-split", choices=["test", "fresh"], default="fresh", help="held-out prompts: 'test' split or 'fresh' unseen problems of the training distribution (seed --task-seed+1000)")
parser.add_argument("--pool", type=str, default="", help="other checkpoints that answer prompts, comma-separated stage/tag[@step] (e.g. 'rl/pilot_rl,sft/student'); the policy is always in")
parser.add_argument("--judge", type=str, default="verifier", help="'verifier' (task verifier + format + length) or a judge checkpoint stage/tag[@step] whose greedy answer decides correctness")
parser.add_argument("--num-prompts", type=int, default=256, help="training prompts to build pairs from")
parser.add_argument("--num-responses", type=int, default=4, help="responses sampled per prompt (spread over the pool)")
parser.add_argument("--max-new-tokens", type=int, default=128, help="longest sampled response (pairs and evaluation)")
parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the pair responses")
parser.add_argument("--top-k", type=int, default=50, help="top-k of the pair responses (0: off)")
parser.add_argument("--pairs-file", type=str, default=None, help="load pairs from this JSONL file instead of building them")
parser.add_argument("--pairs-out", type=str, default=None, help="save the built pairs to this JSONL file")
# the objective and optimization
parser.add_argument("--loss", choices=list(LOSSES), default="dpo-norm", help="dpo: beta 0.1 on summed log-ratios | dpo-norm: beta 5 on per-token means (Tulu 3) | sft: NLL of the chosen side")
parser.add_argument("--beta", type=float, default=None, help="DPO beta (default: 0.1 for dpo, 5 for dpo-norm)")
parser.add_argument("--num-epochs", type=float, default=2.0, help="passes over the pairs")
parser.add_argument("--num-steps", type=int, default=-1, help="optimizer steps (-1: from --num-epochs; 0: only build pairs and evaluate)")
parser.add_argument("--pairs-per-step", type=int, default=16, help="pairs per optimizer step")
parser.add_argument("--device-batch-size", type=int, default=8, help="pairs per forward/backward pass (2 rows each)")
add_optimizer_args(parser)  # --optimizer, --init-lr-frac, --lr
parser.add_argument("--max-seq-len", type=int, default=512, help="crop rendered pairs to this many tokens")
# evaluation and runtime
parser.add_argument("--eval-problems", type=int, default=200, help="held-out prompts for the judge score (start and end, paired)")
parser.add_argument("--skip-start-eval", action="store_true", help="do not evaluate the starting model")
parser.add_argument("--run", type=str, default=None, help="run name of the metrics dir (default: dpo_<tag>_<loss>)")
parser.add_argument("--device-type", type=str, default="", help="cuda|cpu|mps (default: autodetect)")
parser.add_argument("--seed", type=int, default=42, help="seed of the pair sampling, the pair order and the RNGs")
args = parser.parse_args()
require_positive(parser, args, ("num_prompts", "num_responses", "max_new_tokens", "pairs_per_step", "device_batch_size",
                                "max_seq_len", "eval_problems"))
require_nonnegative(parser, args, ("temperature", "top_k", "beta", "init_lr_frac", "lr"))
if args.num_steps < 0 and not args.num_epochs > 0:
    parser.error("--num-epochs must be > 0 (or give --num-steps)")
if (error := synthmath.args_error(args.min_steps, args.max_steps)):
    parser.error(error)
if args.num_responses < 2 and args.pairs_file is None:
    parser.error("--num-responses must be >= 2: a pair needs two responses to compare")
beta = args.beta if args.beta is not None else LOSSES[args.loss]

# -----------------------------------------------------------------------------
# compute, policy, reference, pool, tasks


def parse_ckpt(spec):
    """'stage/tag[@step]' -> (stage, tag, step)."""
    name, _, step = spec.partition("@")
    stage, _, tag = name.partition("/")
    if not stage or not tag:
        raise SystemExit(f"error: checkpoint {spec!r} must be written stage/tag[@step], e.g. rl/d2 or sft/d2@300")
    return stage, tag, int(step) if step else None


def load_other(spec):
    stage, tag, step = parse_ckpt(spec)
    try:
        other, other_tok, _ = load_model(stage, ci.device, tag=tag, step=step)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise SystemExit(f"error: {spec}: {e}")
    problem = tokenizer_mismatch(tokenizer, other_tok)
    if problem:
        raise SystemExit(f"error: {spec} does not share the policy's tokenizer: {problem}")
    return other.eval()


ci = compute_init(args.device_type, seed=args.seed)
if ci.ddp:
    raise SystemExit("chat_dpo is single-process; run it with python -m, not torchrun")
try:
    model, tokenizer, input_meta = load_model(args.source, ci.device, tag=args.model_tag, step=args.model_step)
except (FileNotFoundError, ValueError, RuntimeError) as e:
    raise SystemExit(f"error: {e} (chat_dpo starts from --source {args.source}; run that stage first)")
tag = args.output_tag or input_meta["tag"]
pad_id = tokenizer.get_bos_token_id()
engine = Engine(model, tokenizer)
print0(f"chat_dpo: {args.source}/{input_meta['tag']} step {input_meta['step']} ({model.num_params():,} params), "
       f"loss {args.loss}" + (f" beta {beta}" if beta is not None else ""))

is_math = args.task == "synthmath"
train_task, held_task = prompt_tasks(args.task, args.task_seed, args.eval_split, min_steps=args.min_steps,
                                     max_steps=args.max_steps)
if args.judge == "verifier":
    judge = VerifierJudge(train_task, tokenizer, args.max_new_tokens, math=is_math)
else:
    if not is_math:
        raise SystemExit("error: a checkpoint judge compares final '#### N' answers: use it with --task synthmath")
    judge = CheckpointJudge(Engine(load_other(args.judge), tokenizer), train_task, tokenizer, args.max_new_tokens)
# the held-out score always uses the verifier judge, so runs with different training judges compare
held_judge = VerifierJudge(held_task, tokenizer, args.max_new_tokens, math=is_math)

# -----------------------------------------------------------------------------
# 1) the pairs

t_start = time.time()
if args.pairs_file:
    try:
        pairs = load_pairs(args.pairs_file)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    print0(f"loaded {len(pairs)} pairs from {args.pairs_file}")
    pair_info = {"pairs": len(pairs), "file": args.pairs_file}
else:
    pool = [(f"{args.source}/{input_meta['tag']} (policy)", engine)]
    pool += [(spec, Engine(load_other(spec), tokenizer)) for spec in filter(None, args.pool.split(","))]
    rng = random.Random(args.seed)
    indices = rng.sample(range(len(train_task)), args.num_prompts)
    pairs, pair_info = build_pairs(train_task, indices, pool, tokenizer, judge, args.num_responses,
                                   args.max_new_tokens, args.temperature, args.top_k, seed=args.seed, log=print0)
    print0(f"built {pair_info['pairs']} pairs from {pair_info['prompts']} prompts ({pair_info['all_tied']} had "
           f"all responses tied) in {time.time() - t_start:.0f}s; mean judge score per model: "
           + ", ".join(f"{k} {v:.2f}" for k, v in pair_info["mean_score"].items()))
    if args.pairs_out:
        save_pairs(args.pairs_out, pairs)
        print0(f"saved pairs to {args.pairs_out}")
if not pairs:
    raise SystemExit("error: no pairs (every prompt's responses tied); sample more prompts or responses, or raise --temperature")
len_chosen = torch.tensor([float(response_tokens(tokenizer, p, "chosen")) for p in pairs])  # (N,)
len_rejected = torch.tensor([float(response_tokens(tokenizer, p, "rejected")) for p in pairs])  # (N,)
print0(f"mean length: chosen {len_chosen.mean():.1f}, rejected {len_rejected.mean():.1f} tokens")

# -----------------------------------------------------------------------------
# 2) the reference log-probs, once (the reference never changes, so neither do they)


def batch_of(idx):
    return pair_batch(tokenizer, [pairs[i] for i in idx], pad_id, ci.device, args.max_seq_len)


ref_chosen = torch.zeros(len(pairs))
ref_rejected = torch.zeros(len(pairs))
if args.loss != "sft":
    model.eval()
    with torch.no_grad():
        for b0 in range(0, len(pairs), args.device_batch_size):
            idx = list(range(b0, min(b0 + args.device_batch_size, len(pairs))))
            logp_sum, _ = sequence_logprob_stats(model, *batch_of(idx))  # (2b,)
            ref_chosen[idx], ref_rejected[idx] = logp_sum[:len(idx)].cpu(), logp_sum[len(idx):].cpu()
    model.train()

# -----------------------------------------------------------------------------
# the starting point

logger = MetricsLogger(args.run or f"dpo_{tag}_{args.loss}", config=vars(args))
start = None
if not args.skip_start_eval:
    start = judge_eval(engine, tokenizer, held_task, held_judge, args.eval_problems, args.max_new_tokens)
    print0(f"held-out start: judge score {start['score']:.3f}, accuracy {start['accuracy']:.4f}, "
           f"length {start['length']:.1f} tokens ({start['n']} prompts)")

# -----------------------------------------------------------------------------
# 3) training

num_steps = args.num_steps if args.num_steps >= 0 else math.ceil(args.num_epochs * len(pairs) / args.pairs_per_step)
optimizer = make_optimizer(model, args.optimizer, args.init_lr_frac, args.lr)
order_rng = random.Random(args.seed)
order = []
model.train()
for step in range(num_steps):
    t0 = time.time()
    set_lr_multiplier(optimizer, 1.0 - step / num_steps)  # linear decay to 0
    while len(order) < args.pairs_per_step:  # the next pairs, epoch after shuffled epoch
        epoch = list(range(len(pairs)))
        order_rng.shuffle(epoch)
        order += epoch
    step_idx, order = order[:args.pairs_per_step], order[args.pairs_per_step:]
    n_chosen_tokens = float(len_chosen[step_idx].sum())
    sums = dict(loss=0.0, acc=0.0, margin=0.0, reward_c=0.0, reward_r=0.0)
    for b0 in range(0, len(step_idx), args.device_batch_size):
        idx = step_idx[b0:b0 + args.device_batch_size]
        inputs, targets = batch_of(idx)
        b = len(idx)
        if args.loss == "sft":  # NLL of the chosen side, averaged over the step's chosen tokens
            logp = token_logprobs(model, inputs[:b], targets[:b])
            loss = -logp.sum() / max(n_chosen_tokens, 1.0)
            sums["loss"] += loss.item()
        else:
            logp_sum, counts = sequence_logprob_stats(model, inputs, targets)  # (2b,)
            norm = args.loss == "dpo-norm"
            losses, rc, rr = dpo_loss(logp_sum[:b], logp_sum[b:], ref_chosen[idx].to(ci.device),
                                      ref_rejected[idx].to(ci.device), beta,
                                      counts[:b] if norm else None, counts[b:] if norm else None)
            loss = losses.sum() / len(step_idx)
            sums["loss"] += loss.item()
            sums["acc"] += (rc > rr).float().sum().item()
            sums["margin"] += (rc - rr).sum().item()
            sums["reward_c"] += rc.sum().item()
            sums["reward_r"] += rr.sum().item()
        loss.backward()
    optimizer.step()
    model.zero_grad(set_to_none=True)
    n = len(step_idx)
    record = {"step": step + 1, "loss": sums["loss"], "len_chosen": float(len_chosen[step_idx].mean()),
              "len_rejected": float(len_rejected[step_idx].mean()), "dt": time.time() - t0}
    if args.loss != "sft":
        record.update(reward_acc=sums["acc"] / n, margin=sums["margin"] / n, reward_chosen=sums["reward_c"] / n,
                      reward_rejected=sums["reward_r"] / n)
    logger.log(record)
    if step % 10 == 0 or step + 1 == num_steps:
        extra = (f" reward acc {record['reward_acc']:.2f} margin {record['margin']:+.3f}" if args.loss != "sft" else "")
        print0(f"step {step + 1}/{num_steps} loss {record['loss']:.4f}{extra} | len chosen/rejected "
               f"{record['len_chosen']:.0f}/{record['len_rejected']:.0f} | {record['dt']:.2f}s")

# -----------------------------------------------------------------------------
# 4) held-out judge score, accuracy and length drift; checkpoint; report

final = judge_eval(engine, tokenizer, held_task, held_judge, args.eval_problems, args.max_new_tokens)
lines = [f"held-out end: judge score {final['score']:.3f}, accuracy {final['accuracy']:.4f}, "
         f"policy length {final['length']:.1f} tokens (pairs: chosen {len_chosen.mean():.1f}, rejected "
         f"{len_rejected.mean():.1f})"]
result = {"loss": args.loss, "beta": beta, "seed": args.seed, "pairs": len(pairs), "steps": num_steps,
          "score": final["score"], "accuracy": final["accuracy"], "length": final["length"],
          "len_chosen": float(len_chosen.mean()), "len_rejected": float(len_rejected.mean()), "pair_info": pair_info}
if start is not None:
    diff, se = paired_difference(start["items"], final["items"])
    result.update(start_score=start["score"], start_accuracy=start["accuracy"], start_length=start["length"],
                  accuracy_diff=diff, accuracy_diff_se=se, score_diff=final["score"] - start["score"],
                  length_drift=final["length"] - start["length"])
    lines.append(f"vs start: judge score {start['score']:.3f} -> {final['score']:.3f}, accuracy {diff:+.4f} +- "
                 f"{se:.4f} (paired SE), length {start['length']:.1f} -> {final['length']:.1f}")
for line in lines:
    print0(line)
if num_steps > 0:
    meta = dict(model_config=model.config.to_dict(), args=vars(args), result=result,
                source={"stage": args.source, "tag": input_meta["tag"], "step": input_meta["step"]})
    print0(f"saved {save_checkpoint(checkpoint_dir('dpo', tag), num_steps, model, meta=meta, keep_last=1)}")
logger.log({"step": num_steps, **{k: v for k, v in result.items() if isinstance(v, (int, float))}})
with open(os.path.join(logger.dir, "result.json"), "w") as f:
    json.dump(result, f, indent=1)
from nanochat.report import get_report
get_report().log("Chat DPO", [vars(args), *lines], summary={f"dpo {args.loss} held-out judge score": final["score"]},
                 column="dpo")
print0(f"done in {(time.time() - t_start) / 60:.1f} min: result in {logger.dir}/result.json")
logger.finish()
compute_cleanup()
