"""
On-policy distillation (Thinking Machines, "On-Policy Distillation", Oct 2025; GKD, arXiv 2306.13649): the RL
loop of scripts/chat_rl.py with the reward replaced by a teacher.

Per step: the student samples G completions of P prompts (the engine, calculator on); ONE teacher forward
pass over the sampled rows gives log p_teacher of every sampled token; the per-token advantage is
    A_t = -(log p_student(x_t) - log p_teacher(x_t))        (reverse KL, discount 0: each token judged alone)
and the student takes a policy-gradient step with the importance ratio against its sampling log-probs
(nanochat/policy.py: reverse_kl_advantages, pg_token_loss). Prompt tokens and forced tool outputs have mask
0, so they get no gradient. Optionally mix in the task reward (--reward-coef: group-mean-centred reward added
to every token's advantage).

Two baselines through the same loop, same prompts, same number of student samples per step:
    --mode onpolicy --teacher-coef 0 --reward-coef 1 --advantage grpo   GRPO on the task reward alone
    --mode offpolicy                                   SFT on teacher samples (classic distillation)

Teacher and student must share the tokenizer: checked at start (a mismatch is a clear error). The teacher
can live in another base dir (--teacher-dir: a checkpoint directory, its tokenizer in --teacher-tokenizer).

    python -m scripts.chat_distill --source sft --teacher-source rl          # CPU, SynthMath
    python -m scripts.chat_distill --mode offpolicy --num-steps 30
    python -m scripts.chat_distill --device-type cuda --prompts-per-step 64 --num-samples 4   # one GPU

Single process. Outputs: checkpoint in <base_dir>/checkpoints/distill/<tag>/, metrics (reverse KL per
token, reward, held-out pass@1 vs step) in <base_dir>/runs/<run>/metrics.jsonl, final numbers in
result.json next to it, the "Chat distill" report section. docs/distill.md has the experiment.
"""
import os
import json
import time
import argparse

import torch

from nanochat.common import compute_init, compute_cleanup, print0, MetricsLogger, require_nonnegative, require_positive
from nanochat.checkpoint import checkpoint_dir, load_model, model_from_checkpoint, save_checkpoint
from nanochat.engine import Engine
from nanochat.policy import (collate, token_logprobs, compute_advantages, loss_weights, pg_token_loss,
                             reverse_kl_advantages, tokenizer_mismatch, add_optimizer_args, make_optimizer,
                             set_lr_multiplier)
from nanochat.rollout import prompt_tasks, sample_group, step_prompts
from nanochat.task_eval import evaluate_task, paired_difference
from tasks import synthmath

# -----------------------------------------------------------------------------
# arguments

parser = argparse.ArgumentParser(description="On-policy distillation from a teacher checkpoint (reverse KL per token).")
parser.add_argument("--source", type=str, default="sft", help="stage of the student's starting checkpoint")
parser.add_argument("--model-tag", type=str, default=None, help="tag of the student checkpoint (default: the newest of --source)")
parser.add_argument("--model-step", type=int, default=None, help="step of the student checkpoint (default: its latest)")
parser.add_argument("--teacher-source", type=str, default="rl", help="stage of the teacher checkpoint (same base dir)")
parser.add_argument("--teacher-tag", type=str, default=None, help="tag of the teacher checkpoint (default: the newest of --teacher-source)")
parser.add_argument("--teacher-step", type=int, default=None, help="step of the teacher checkpoint")
parser.add_argument("--teacher-dir", type=str, default=None, help="a teacher checkpoint directory elsewhere (overrides --teacher-source/--teacher-tag)")
parser.add_argument("--teacher-tokenizer", type=str, default=None, help="with --teacher-dir: the teacher's tokenizer directory (checked against the student's)")
parser.add_argument("--output-tag", type=str, default=None, help="tag of the distill checkpoint (default: the student tag)")
# task
parser.add_argument("--min-steps", type=int, default=1, help="SynthMath: fewest calculator steps of a problem")
parser.add_argument("--max-steps", type=int, default=4, help="SynthMath: most calculator steps of a problem")
parser.add_argument("--task-seed", type=int, default=1, help="seed of the training prompts")
parser.add_argument("--eval-split", choices=["test", "fresh"], default="fresh", help="held-out problems: 'test' split or 'fresh' unseen problems of the training distribution (seed --task-seed+1000)")
# sampling and the objective
parser.add_argument("--mode", choices=["onpolicy", "offpolicy"], default="onpolicy", help="onpolicy: the student samples, the teacher grades every token | offpolicy: the teacher samples, the student does SFT on them")
parser.add_argument("--num-steps", type=int, default=50, help="optimizer steps")
parser.add_argument("--prompts-per-step", type=int, default=8, help="prompts per step (P)")
parser.add_argument("--num-samples", type=int, default=4, help="completions sampled per prompt (G)")
parser.add_argument("--max-new-tokens", type=int, default=128, help="longest completion")
parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (1.0: the log-probs the loss uses are exactly the sampling ones)")
parser.add_argument("--top-k", type=int, default=0, help="top-k of the sampling (0: off)")
parser.add_argument("--teacher-coef", type=float, default=1.0, help="weight of the reverse-KL advantage (0: no teacher signal)")
parser.add_argument("--reward-coef", type=float, default=0.0, help="weight of the group-centred task reward added to every token's advantage")
parser.add_argument("--advantage", choices=["mean", "grpo"], default="mean", help="how the task reward is centred within a group: r - mean, or GRPO's (r - mean) / std (arXiv 2402.03300)")
parser.add_argument("--clip-eps", type=float, default=0.2, help="PPO ratio clip against the sampling log-probs")
# optimization
add_optimizer_args(parser)  # --optimizer, --init-lr-frac, --lr
parser.add_argument("--device-batch-size", type=int, default=16, help="rows per forward/backward pass")
# evaluation and runtime
parser.add_argument("--eval-every", type=int, default=10, help="held-out greedy pass@1 every N steps (-1: start and end only)")
parser.add_argument("--eval-problems", type=int, default=200, help="held-out problems at the start and the end (paired)")
parser.add_argument("--eval-during-problems", type=int, default=100, help="held-out problems of the evaluations in between")
parser.add_argument("--run", type=str, default=None, help="run name of the metrics dir (default: distill_<tag>_<mode>)")
parser.add_argument("--device-type", type=str, default="", help="cuda|cpu|mps (default: autodetect)")
parser.add_argument("--seed", type=int, default=42, help="seed of the RNGs and of the rollouts")
args = parser.parse_args()
require_positive(parser, args, ("num_steps", "prompts_per_step", "num_samples", "max_new_tokens", "device_batch_size",
                                "eval_problems"))
require_nonnegative(parser, args, ("temperature", "top_k", "teacher_coef", "reward_coef", "clip_eps", "init_lr_frac", "lr"))
if (error := synthmath.args_error(args.min_steps, args.max_steps)):
    parser.error(error)
if args.mode == "onpolicy" and args.teacher_coef == 0 and args.reward_coef == 0:
    parser.error("--teacher-coef 0 and --reward-coef 0 leave no learning signal")
if args.teacher_tokenizer and not args.teacher_dir:
    parser.error("--teacher-tokenizer goes with --teacher-dir")

# -----------------------------------------------------------------------------
# student, teacher (frozen), the tokenizer check

ci = compute_init(args.device_type, seed=args.seed)
if ci.ddp:
    raise SystemExit("chat_distill is single-process; run it with python -m, not torchrun")
try:
    model, tokenizer, input_meta = load_model(args.source, ci.device, tag=args.model_tag, step=args.model_step)
    if args.teacher_dir:
        teacher, teacher_meta = model_from_checkpoint(args.teacher_dir, ci.device, args.teacher_step)
        teacher_name = args.teacher_dir
        if args.teacher_tokenizer:
            from nanochat.tokenizer import Tokenizer
            teacher_tok = Tokenizer.from_directory(args.teacher_tokenizer)
        else:
            teacher_tok = tokenizer
    else:
        teacher, teacher_tok, teacher_meta = load_model(args.teacher_source, ci.device, tag=args.teacher_tag,
                                                        step=args.teacher_step)
        teacher_name = f"{args.teacher_source}/{teacher_meta['tag']}"
except (FileNotFoundError, ValueError, RuntimeError) as e:
    raise SystemExit(f"error: {e} (check --source/--model-tag and --teacher-source/--teacher-tag)")
problem = tokenizer_mismatch(tokenizer, teacher_tok)
if problem is None and teacher.config.vocab_size != model.config.vocab_size:
    problem = f"the teacher's vocab is {teacher.config.vocab_size}, the student's {model.config.vocab_size}"
if problem:
    raise SystemExit(f"error: teacher {teacher_name} and student must share the tokenizer: {problem}. "
                     f"Distill from a teacher trained with the student's tokenizer.")
teacher.eval().requires_grad_(False)
model.train()
tag = args.output_tag or input_meta["tag"]
print0(f"chat_distill ({args.mode}): student {args.source}/{input_meta['tag']} ({model.num_params():,} params) "
       f"<- teacher {teacher_name} ({teacher.num_params():,} params); teacher-coef {args.teacher_coef} "
       f"reward-coef {args.reward_coef}")

train_task, held_task = prompt_tasks("synthmath", args.task_seed, args.eval_split, min_steps=args.min_steps,
                                     max_steps=args.max_steps)
engine = Engine(model, tokenizer)
teacher_engine = Engine(teacher, tokenizer)
pad_id = tokenizer.get_bos_token_id()


def held_out_eval(n):
    return evaluate_task(model, tokenizer, held_task[:n], name="synthmath", max_new_tokens=args.max_new_tokens,
                         temperature=0.0, seed=args.seed, engine=engine)


# -----------------------------------------------------------------------------
# optimizer, logging, the starting point

optimizer = make_optimizer(model, args.optimizer, args.init_lr_frac, args.lr)
logger = MetricsLogger(args.run or f"distill_{tag}_{args.mode}", config=vars(args))
t_start = time.time()
start = held_out_eval(args.eval_problems)
curve = [(0, start["accuracy"])]
print0(f"step 0 held-out greedy pass@1: {start['accuracy']:.4f} +- {start['stderr']:.4f} ({start['n']} problems)")
logger.log({"step": 0, "eval_pass@1": start["accuracy"], "student_samples": 0})

# -----------------------------------------------------------------------------
# the loop

for step in range(args.num_steps):
    t0 = time.time()
    set_lr_multiplier(optimizer, 1.0 - step / args.num_steps)

    # 1) samples: the student's (on-policy) or the teacher's (off-policy), with their task rewards
    sampler = engine if args.mode == "onpolicy" else teacher_engine
    rows, masks, rewards = [], [], []
    for index, seed in step_prompts(step, args.prompts_per_step, len(train_task), args.seed):
        conversation = train_task[index]
        g = sample_group(sampler, tokenizer, conversation, args.num_samples, args.max_new_tokens,
                         args.temperature, args.top_k, seed=seed)
        rows += g.rows
        masks += g.masks
        rewards.append([float(train_task.reward(conversation, t)) for t in g.texts])
    rewards = torch.tensor(rewards)  # (P, G)
    reward_adv = compute_advantages(rewards, args.advantage).reshape(-1)  # (B,)
    n_tokens = sum(sum(m[1:]) for m in masks)

    # 2) micro-batches: teacher forward (no grad), student forward + backward
    sums = dict(rkl=0.0, tokens=0.0)
    for b0 in range(0, len(rows), args.device_batch_size):
        inputs, targets = collate(rows[b0:b0 + args.device_batch_size], masks[b0:b0 + args.device_batch_size],
                                  pad_id, ci.device)
        valid = targets >= 0
        w = loss_weights(valid, "token", num_tokens=n_tokens)  # (b, T): every sampled token of the step counts the same
        logp = token_logprobs(model, inputs, targets)  # (b, T)
        with torch.no_grad():
            teacher_logp = token_logprobs(teacher, inputs, targets)  # (b, T)
        if args.mode == "offpolicy":  # SFT on the teacher's samples
            loss = -(w * logp).sum()
        else:
            adv = args.teacher_coef * reverse_kl_advantages(logp, teacher_logp, valid)  # (b, T)
            adv = adv + args.reward_coef * reward_adv[b0:b0 + args.device_batch_size].to(ci.device).unsqueeze(1)
            # one update per batch: the sampling log-probs are the current ones, so the ratio is 1 (REINFORCE)
            loss = (w * pg_token_loss(logp, logp.detach(), adv, args.clip_eps)).sum()
        loss.backward()
        sums["rkl"] += ((logp.detach() - teacher_logp) * valid).sum().item()
        sums["tokens"] += valid.sum().item()
    optimizer.step()
    model.zero_grad(set_to_none=True)

    # 3) logging and evaluation
    record = {"step": step + 1, "reverse_kl": sums["rkl"] / max(sums["tokens"], 1), "reward": rewards.mean().item(),
              "tokens_per_sample": sums["tokens"] / len(rows), "student_samples": (step + 1) * len(rows),
              "dt": time.time() - t0}
    print0(f"step {step + 1}/{args.num_steps} reverse KL/token {record['reverse_kl']:+.4f} (on "
           f"{'student' if args.mode == 'onpolicy' else 'teacher'} samples) reward {record['reward']:.3f} | "
           f"{record['dt']:.1f}s")
    if args.eval_every > 0 and (step + 1) % args.eval_every == 0 and step + 1 < args.num_steps:
        res = held_out_eval(args.eval_during_problems)
        record["eval_pass@1"] = res["accuracy"]
        curve.append((step + 1, res["accuracy"]))
        print0(f"  held-out greedy pass@1: {res['accuracy']:.4f} ({res['n']} problems)")
    logger.log(record)

# -----------------------------------------------------------------------------
# the end: paired comparison with the start, checkpoint, report

final = held_out_eval(args.eval_problems)
curve.append((args.num_steps, final["accuracy"]))
diff, se = paired_difference(start["items"], final["items"])
line = (f"held-out greedy pass@1: {start['accuracy']:.4f} -> {final['accuracy']:.4f}, {diff:+.4f} +- {se:.4f} "
        f"(paired SE) after {args.num_steps} steps ({args.num_steps * args.prompts_per_step * args.num_samples} "
        f"{'student' if args.mode == 'onpolicy' else 'teacher'} samples)")
print0(line)
result = {"mode": args.mode, "teacher_coef": args.teacher_coef, "reward_coef": args.reward_coef, "seed": args.seed,
          "start_accuracy": start["accuracy"], "accuracy": final["accuracy"], "accuracy_diff": diff,
          "accuracy_diff_se": se, "curve": curve, "minutes": (time.time() - t_start) / 60}
meta = dict(model_config=model.config.to_dict(), args=vars(args), result=result, teacher=teacher_name,
            source={"stage": args.source, "tag": input_meta["tag"], "step": input_meta["step"]})
print0(f"saved {save_checkpoint(checkpoint_dir('distill', tag), args.num_steps, model, meta=meta, keep_last=1)}")
logger.log({"step": args.num_steps, "eval_pass@1": final["accuracy"], "accuracy_diff": diff})
with open(os.path.join(logger.dir, "result.json"), "w") as f:
    json.dump(result, f, indent=1)
from nanochat.report import get_report
get_report().log("Chat distill", [vars(args), line], summary={f"distill {args.mode} held-out pass@1": final["accuracy"]},
                 column="distill")
logger.finish()
compute_cleanup()
