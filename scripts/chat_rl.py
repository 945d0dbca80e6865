"""
Reinforcement learning with verifiable rewards on a chat model: the GRPO family over the engine.

Per step: take P prompts of the training task, sample G completions of each with the engine (batched, the
calculator tool on), score every completion with the task's verifiable reward (SynthMath / GSM8K: the final
`#### N`; SynthIF: the fraction of constraints met), turn rewards into advantages within each group, and take
one on-policy policy-gradient step (or --ppo-epochs clipped steps) on the sampled tokens only: the prompt and
the tool outputs the engine forced get no gradient (nanochat/policy.py has the mask rule and every loss).

The defaults are nanochat's simple recipe: REINFORCE with the group mean as baseline (no std division, no KL,
no ratio clipping since there is one update per batch), token-level normalization over the step. Each variant
is one flag:
    --advantage grpo            (r - mean) / std                        GRPO, arXiv 2402.03300
    --advantage drgrpo          r - mean, loss sum / constant           Dr. GRPO, arXiv 2503.20783
    --loss-norm sequence        per-sequence mean, then mean            GRPO's original objective
    --kl-beta 0.04              k3 KL to the frozen starting model      Schulman 2020; GRPO eq. 4
    --ppo-epochs 2 --clip-eps 0.2   several clipped updates per batch   PPO, arXiv 1707.06347
    --drop-constant-groups      skip groups whose rewards are all equal DAPO dynamic sampling, arXiv 2503.14476
    --format-reward 0.1 --unfinished-penalty 0.5   reward shaping

    python -m scripts.chat_rl                                   # CPU/offline: SynthMath from the latest sft
    python -m scripts.chat_rl --num-steps 20 --eval-every 10    # a short CPU run
    python -m scripts.chat_rl --task gsm8k --device-batch-size 16   # one GPU, GSM8K train (online)
    torchrun --standalone --nproc_per_node=8 -m scripts.chat_rl --task gsm8k
    python -m scripts.chat_rl --resume                          # continue the latest rl checkpoint

Outputs: checkpoints in <base_dir>/checkpoints/rl/<tag>/, metrics (step, reward, ...) in
<base_dir>/runs/<run>/metrics.jsonl, the "Chat RL" report section. Held-out evaluation: greedy pass@1 of the
starting model and of the trained one on the same problems (paired difference and standard error), and
sampled pass@k. The recipe search behind the CPU defaults is in docs/rl_recipe.md.
"""
import copy
import time
import argparse

import torch
import torch.distributed as dist

from nanochat.common import (compute_init, compute_cleanup, print0, GracefulStop, MetricsLogger, require_nonnegative,
                             require_positive)
from nanochat.checkpoint import (checkpoint_dir, find_latest_step, load_checkpoint, load_model, save_checkpoint,
                                 get_rng_state, set_rng_state)
from nanochat.decontam import decontaminate_task
from nanochat.engine import Engine
from nanochat.policy import (ADVANTAGES, collate, token_logprobs, compute_advantages, nonconstant_groups,
                             shape_rewards, loss_weights, policy_loss, add_optimizer_args, make_optimizer,
                             set_lr_multiplier)
from nanochat.rollout import prompt_tasks, sample_group, step_prompts
from nanochat.task_eval import evaluate_task, paired_difference
from tasks import synthmath
from tasks.verify import extract_answer

# -----------------------------------------------------------------------------
# arguments

parser = argparse.ArgumentParser(description="RL with verifiable rewards (GRPO family) on a chat model.")
# input and output
parser.add_argument("--source", type=str, default="sft", help="stage of the starting checkpoint (sft, mid, rft, ...)")
parser.add_argument("--model-tag", type=str, default=None, help="tag of the starting checkpoint (default: the newest of --source)")
parser.add_argument("--model-step", type=int, default=None, help="step of the starting checkpoint (default: its latest)")
parser.add_argument("--output-tag", type=str, default=None, help="tag of the rl checkpoints (default: the input tag)")
# task
parser.add_argument("--task", choices=["synthmath", "gsm8k", "synthif"], default="synthmath", help="training task and its held-out split: SynthMath (offline), GSM8K (train split needs Hugging Face), SynthIF")
parser.add_argument("--min-steps", type=int, default=1, help="SynthMath: fewest calculator steps of a problem")
parser.add_argument("--max-steps", type=int, default=4, help="SynthMath: most calculator steps of a problem")
parser.add_argument("--max-number", type=int, default=50, help="SynthMath: largest input number of the train split (held-out test draws from (max, 2*max])")
parser.add_argument("--task-seed", type=int, default=1, help="seed of the training prompts (SFT uses seed 0: RL sees fresh problems)")
parser.add_argument("--eval-split", choices=["test", "fresh"], default="test", help="held-out problems: 'test' (disjoint templates and number ranges) or 'fresh' (unseen problems of the training distribution, seed --task-seed+1000)")
# sampling
parser.add_argument("--num-steps", type=int, default=100, help="optimizer steps")
parser.add_argument("--prompts-per-step", type=int, default=16, help="prompts per step over all processes (P)")
parser.add_argument("--num-samples", type=int, default=16, help="completions sampled per prompt (G, the group)")
parser.add_argument("--max-new-tokens", type=int, default=256, help="longest completion; also Dr. GRPO's constant")
parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the rollouts")
parser.add_argument("--top-k", type=int, default=50, help="top-k of the rollouts (0: off)")
# the objective
parser.add_argument("--advantage", choices=ADVANTAGES, default="mean", help="mean: r-mean (nanochat) | grpo: (r-mean)/std (arXiv 2402.03300) | drgrpo: r-mean with the loss summed / a constant (arXiv 2503.20783)")
parser.add_argument("--loss-norm", choices=["token", "sequence"], default=None, help="token: sum over the step's sampled tokens / their count (DAPO, arXiv 2503.14476; default) | sequence: mean per sequence, then over sequences (GRPO). drgrpo fixes its own")
parser.add_argument("--kl-beta", type=float, default=0.0, help="weight of the k3 KL to the frozen starting model (0: off, no reference model kept)")
parser.add_argument("--ppo-epochs", type=int, default=1, help="updates per sampled batch; > 1 uses the PPO clipped ratio (arXiv 1707.06347)")
parser.add_argument("--clip-eps", type=float, default=0.2, help="PPO ratio clip: updates stop pushing a token past 1 +- eps")
parser.add_argument("--drop-constant-groups", action="store_true", help="drop groups whose rewards are all equal (zero advantage) from the step and its normalization (DAPO dynamic sampling)")
parser.add_argument("--format-reward", type=float, default=0.0, help="bonus for a well-formed answer (math: a parseable '#### N'; other tasks: finished)")
parser.add_argument("--unfinished-penalty", type=float, default=0.0, help="penalty for hitting --max-new-tokens without <|assistant_end|>")
# optimization
add_optimizer_args(parser)  # --optimizer, --init-lr-frac, --lr
parser.add_argument("--lr-decay", choices=["linear", "none"], default="linear", help="learning rate schedule: linear decay to 0 over --num-steps (nanochat) or constant")
parser.add_argument("--device-batch-size", type=int, default=8, help="rows per forward/backward pass (gradient accumulation over the step)")
# evaluation
parser.add_argument("--eval-every", type=int, default=50, help="held-out evaluation every N steps (-1: only at the start and end)")
parser.add_argument("--eval-problems", type=int, default=400, help="held-out problems for greedy pass@1 (start and end: paired)")
parser.add_argument("--eval-during-problems", type=int, default=100, help="held-out problems of the evaluations in between (cheaper)")
parser.add_argument("--pass-k", type=int, default=8, help="k of the sampled pass@k evaluation (0: off)")
parser.add_argument("--pass-k-problems", type=int, default=50, help="held-out problems of the pass@k evaluation")
parser.add_argument("--skip-start-eval", action="store_true", help="do not evaluate the starting model (no paired comparison)")
# checkpoints and runtime
parser.add_argument("--save-every", type=int, default=-1, help="checkpoint every N steps (the last step is always saved)")
parser.add_argument("--keep-last", type=int, default=2, help="keep this many newest rl checkpoints")
parser.add_argument("--stop-after", type=int, default=-1, help="save and exit after this step, keeping the --num-steps schedule (split a run across jobs; --resume continues it)")
parser.add_argument("--resume", action="store_true", help="continue from the latest complete rl checkpoint of --output-tag")
parser.add_argument("--run", type=str, default=None, help="run name of the metrics dir (and wandb if installed; default: rl_<tag>)")
parser.add_argument("--device-type", type=str, default="", help="cuda|cpu|mps (default: autodetect)")
parser.add_argument("--seed", type=int, default=42, help="seed of the RNGs and of the rollouts")
args = parser.parse_args()

if args.advantage == "drgrpo" and args.loss_norm is not None:
    parser.error("--advantage drgrpo fixes the normalization (sum over tokens / a constant); drop --loss-norm")
loss_norm = "constant" if args.advantage == "drgrpo" else (args.loss_norm or "token")
require_nonnegative(parser, args, ("temperature", "top_k", "kl_beta", "clip_eps", "init_lr_frac", "lr"))
if (error := synthmath.args_error(args.min_steps, args.max_steps, args.max_number)):
    parser.error(error)
require_positive(parser, args, ("num_steps", "prompts_per_step", "num_samples", "max_new_tokens", "ppo_epochs",
                                "device_batch_size", "eval_problems", "eval_during_problems", "keep_last"))
if args.pass_k < 0 or args.pass_k == 1:
    parser.error("--pass-k 1 is the greedy pass@1 that always runs; use k >= 2, or 0 to turn it off")
if args.pass_k > 1:
    require_positive(parser, args, ("pass_k_problems",))

# -----------------------------------------------------------------------------
# compute, the starting model, a frozen reference

ci = compute_init(args.device_type, seed=args.seed)
master = ci.rank == 0
if args.prompts_per_step % ci.world_size:
    raise SystemExit(f"--prompts-per-step {args.prompts_per_step} must be a multiple of the {ci.world_size} processes")
try:
    model, tokenizer, input_meta = load_model(args.source, ci.device, tag=args.model_tag, step=args.model_step)
except (FileNotFoundError, ValueError, RuntimeError) as e:
    raise SystemExit(f"error: {e} (chat_rl starts from --source {args.source}; run that stage first)")
model.train()
tag = args.output_tag or input_meta["tag"]
ckpt_dir = checkpoint_dir("rl", tag)
print0(f"chat_rl: {args.source}/{input_meta['tag']} step {input_meta['step']} ({model.num_params():,} params) -> "
       f"{ckpt_dir}")
print0(f"recipe: advantage={args.advantage} loss-norm={loss_norm} kl-beta={args.kl_beta} ppo-epochs={args.ppo_epochs} "
       f"drop-constant={args.drop_constant_groups} T={args.temperature} top-k={args.top_k} "
       f"P={args.prompts_per_step} G={args.num_samples} optimizer={args.optimizer}")
ref_model = None
if args.kl_beta > 0:  # the reference is the starting policy, frozen for the whole run (also across resumes)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False)

# -----------------------------------------------------------------------------
# tasks: training prompts and the held-out set

train_task, held_task = prompt_tasks(args.task, args.task_seed, args.eval_split, min_steps=args.min_steps,
                                     max_steps=args.max_steps, max_number=args.max_number)
if args.task == "gsm8k":  # 8-gram decontamination (nanochat/decontam.py); the 1M synthetic prompts use templates disjoint from their test splits
    train_task = decontaminate_task(train_task, "rl-gsm8k", source="hf", log=print0)[0]
is_math = args.task in ("synthmath", "gsm8k")
engine = Engine(model, tokenizer)
pad_id = tokenizer.get_bos_token_id()

# -----------------------------------------------------------------------------
# rollouts: sample G completions of one prompt and score them


def rollout(conversation, seed):
    """G sampled rows (prompt + completion incl. its stop token), their masks, and per-row reward facts."""
    g = sample_group(engine, tokenizer, conversation, args.num_samples, args.max_new_tokens, args.temperature,
                     args.top_k, seed=seed)
    task_r = [float(train_task.reward(conversation, text)) for text in g.texts]
    formed = [extract_answer(text) is not None for text in g.texts] if is_math else g.finished
    return g.rows, g.masks, task_r, g.finished, formed, [len(c) for c in g.completions]


def all_sum(*values):
    """Sum floats over ranks (a no-op on one process)."""
    t = torch.tensor(values, dtype=torch.float64, device=ci.device)
    if ci.ddp:
        dist.all_reduce(t)
    return t.tolist()


def held_out_eval(num_problems, num_samples=1, temperature=0.0):
    return evaluate_task(model, tokenizer, held_task[:num_problems], name=f"{args.task}-{args.eval_split}",
                         num_samples=num_samples, max_new_tokens=args.max_new_tokens, temperature=temperature,
                         top_k=args.top_k or None, seed=args.seed, engine=engine)


# -----------------------------------------------------------------------------
# optimizer, resume

if args.optimizer == "adamw" and ci.ddp:
    raise SystemExit("--optimizer adamw is single-process only (it does not average gradients); use muon")
optimizer = make_optimizer(model, args.optimizer, args.init_lr_frac, args.lr)

run = args.run or f"rl_{tag}"
logger = MetricsLogger(run, config=vars(args), use_wandb=args.run is not None)
start_step, baseline_items = 0, None
if args.resume:
    last = find_latest_step(ckpt_dir)
    if last is None:
        raise SystemExit(f"error: --resume but no complete checkpoint in {ckpt_dir}; run without --resume first")
    model_state, optim_state, rank_state, meta = load_checkpoint(ckpt_dir, last, ci.device)
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in model_state.items()})
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)
    if rank_state is not None:
        set_rng_state(rank_state["rng"])
    start_step, baseline_items = meta["step"], meta["loop_state"].get("baseline_items")
    logger.truncate_after(start_step)
    print0(f"resumed from {ckpt_dir} step {start_step}")


def save(step):
    loop_state = {"baseline_items": baseline_items,
                  "source_checkpoint": {"stage": args.source, "tag": input_meta["tag"], "step": input_meta["step"]}}
    meta = dict(model_config=model.config.to_dict(), args=vars(args), loop_state=loop_state)
    path = save_checkpoint(ckpt_dir, step, model, optimizer, meta=meta, rank_state={"rng": get_rng_state()},
                           keep_last=args.keep_last)
    print0(f"saved {path}")


# -----------------------------------------------------------------------------
# the starting point on the held-out set

t_start = time.time()
if baseline_items is None and not args.skip_start_eval:
    res = held_out_eval(args.eval_problems)
    baseline_items = res["items"]
    print0(f"step {start_step} held-out greedy pass@1 (start): {res['accuracy']:.4f} +- {res['stderr']:.4f} "
           f"on {res['n']} problems ({res['seconds']:.0f}s)")
    logger.log({"step": start_step, "eval_pass@1": res["accuracy"], "eval_n": res["n"]})

# -----------------------------------------------------------------------------
# the loop

P_local = args.prompts_per_step // ci.world_size
last_eval = None
stop = GracefulStop()  # Ctrl-C / SIGTERM: finish the step, save, exit (a second one quits at once)
for step in range(start_step, args.num_steps):
    t0 = time.time()
    lrm = 1.0 - step / args.num_steps if args.lr_decay == "linear" else 1.0
    set_lr_multiplier(optimizer, lrm)

    # 1) rollouts of this rank's prompts
    seqs, masks, rewards, task_rewards, finished, lengths = [], [], [], [], [], []
    for index, seed in step_prompts(step, args.prompts_per_step, len(train_task), args.seed, ci.rank, ci.world_size):
        rows, row_masks, task_r, done, formed, lens = rollout(train_task[index], seed)
        seqs.append(rows)
        masks.append(row_masks)
        rewards.append(shape_rewards(task_r, done, formed, args.format_reward, args.unfinished_penalty))
        task_rewards.append(task_r)
        finished.append(done)
        lengths.append(lens)
    rewards = torch.stack(rewards)  # (P_local, G)
    task_rewards_t = torch.tensor(task_rewards)  # (P_local, G)
    lengths_t = torch.tensor(lengths, dtype=torch.float32)  # (P_local, G)
    finished_t = torch.tensor(finished, dtype=torch.float32)

    # 2) advantages, and which groups take part in the update
    advantages = compute_advantages(rewards, args.advantage)  # (P_local, G)
    keep = nonconstant_groups(rewards) if args.drop_constant_groups else torch.ones(P_local, dtype=torch.bool)
    rows = [r for k, g in zip(keep.tolist(), seqs) if k for r in g]
    row_masks = [m for k, g in zip(keep.tolist(), masks) if k for m in g]
    row_adv = advantages[keep].reshape(-1)  # (B,)

    # 3) the step's normalization totals over every rank, then micro-batched forward/backward
    n_rows = len(rows)
    n_tokens = sum(sum(m[1:]) for m in row_masks)
    tot_rows, tot_tokens = all_sum(n_rows, n_tokens)
    stats_sum = dict(entropy=0.0, kl=0.0, clip_frac=0.0, tokens=0.0)
    if tot_rows > 0:
        batches = []
        for b0 in range(0, n_rows, args.device_batch_size):
            inputs, targets = collate(rows[b0:b0 + args.device_batch_size], row_masks[b0:b0 + args.device_batch_size],
                                      pad_id, ci.device)
            w = loss_weights(targets >= 0, loss_norm, num_tokens=tot_tokens, num_seqs=tot_rows,
                             max_len=args.max_new_tokens) * ci.world_size  # the optimizer averages over ranks
            old_logp = ref_logp = None
            with torch.no_grad():
                if args.ppo_epochs > 1:
                    old_logp = token_logprobs(model, inputs, targets)
                if ref_model is not None:
                    ref_logp = token_logprobs(ref_model, inputs, targets)
            batches.append((inputs, targets, w, row_adv[b0:b0 + args.device_batch_size].to(ci.device), old_logp, ref_logp))
        for epoch in range(args.ppo_epochs):
            for inputs, targets, w, adv, old_logp, ref_logp in batches:
                logp, entropy = token_logprobs(model, inputs, targets, with_entropy=True)
                loss, stats = policy_loss(logp, logp.detach() if old_logp is None else old_logp, adv, w,
                                          args.clip_eps, ref_logp, args.kl_beta)
                loss.backward()
                if epoch == 0:
                    n_valid = (targets >= 0).sum().item()
                    stats_sum["entropy"] += entropy.sum().item()
                    stats_sum["kl"] += stats.get("kl", torch.tensor(0.0)).item() / ci.world_size
                    stats_sum["tokens"] += n_valid
                stats_sum["clip_frac"] += stats["clip_frac"].item() * (targets >= 0).sum().item()
            optimizer.step()
            model.zero_grad(set_to_none=True)
    else:
        print0(f"step {step}: every group had a constant reward; no update")

    # 4) logging: reward, lengths of right and wrong answers, entropy, KL
    right = task_rewards_t >= 1.0
    s = all_sum(task_rewards_t.sum().item(), rewards.sum().item(), task_rewards_t.numel(),
                (lengths_t * right).sum().item(), right.sum().item(), (lengths_t * ~right).sum().item(),
                (~right).sum().item(), finished_t.sum().item(), keep.sum().item(), stats_sum["entropy"],
                stats_sum["tokens"], stats_sum["kl"], stats_sum["clip_frac"])
    (r_sum, shaped_sum, n, len_r, n_r, len_w, n_w, fin, kept, ent, toks, kl, clip) = s
    record = {"step": step + 1, "reward": r_sum / n, "reward_shaped": shaped_sum / n,
              "len_correct": len_r / max(n_r, 1), "len_incorrect": len_w / max(n_w, 1), "finished": fin / n,
              "groups_kept": kept / args.prompts_per_step, "entropy": ent / max(toks, 1),
              "lr_mult": lrm, "dt": time.time() - t0}
    if args.kl_beta > 0:
        record["kl"] = kl
    if args.ppo_epochs > 1:
        record["clip_frac"] = clip / max(toks * args.ppo_epochs, 1)
    elapsed = time.time() - t_start
    eta = elapsed / (step + 1 - start_step) * (args.num_steps - step - 1)
    print0(f"step {step + 1}/{args.num_steps} reward {record['reward']:.3f} len right/wrong "
           f"{record['len_correct']:.0f}/{record['len_incorrect']:.0f} entropy {record['entropy']:.3f} "
           f"groups kept {record['groups_kept']:.2f}" + (f" kl {kl:.4f}" if args.kl_beta > 0 else "")
           + f" | {record['dt']:.1f}s, eta {eta / 60:.1f} min")

    # 5) held-out evaluation in between, checkpoints
    last_step = step + 1 == args.num_steps
    if args.eval_every > 0 and (step + 1) % args.eval_every == 0 and not last_step:
        res = held_out_eval(args.eval_during_problems)
        record["eval_pass@1"] = res["accuracy"]
        print0(f"  held-out greedy pass@1: {res['accuracy']:.4f} +- {res['stderr']:.4f} on {res['n']} problems")
    logger.log(record)
    interrupted = stop.requested(ci.device)
    if (last_step or interrupted or (args.save_every > 0 and (step + 1) % args.save_every == 0)
            or step + 1 == args.stop_after):
        save(step + 1)
    if interrupted:
        stop.finish(step + 1)  # exits
    if step + 1 == args.stop_after and not last_step:
        print0(f"stopping after step {step + 1} (--stop-after); continue with --resume")
        compute_cleanup()
        raise SystemExit(0)

stop.finish(args.num_steps)  # the run is complete: the usual signal handlers again

# -----------------------------------------------------------------------------
# the end: paired comparison with the starting model, pass@k, report

final = held_out_eval(args.eval_problems)
summary = {"held-out pass@1": final["accuracy"]}
lines = [f"held-out ({args.task}, {args.eval_split}) greedy pass@1 after RL: {final['accuracy']:.4f} +- "
         f"{final['stderr']:.4f} on {final['n']} problems"]
if baseline_items is not None:
    start_acc = sum(it["correct"] for it in baseline_items) / len(baseline_items)
    diff, se = paired_difference(baseline_items, final["items"])
    summary.update({"held-out pass@1 start": start_acc, "RL - start": diff, "RL - start paired SE": se})
    lines.append(f"starting model: {start_acc:.4f}; RL - start = {diff:+.4f} +- {se:.4f} (paired SE), "
                 f"{diff / se if se > 0 else float('nan'):+.1f} SE")
if args.pass_k > 1:
    pk = held_out_eval(args.pass_k_problems, num_samples=args.pass_k, temperature=args.temperature)
    summary[f"held-out pass@{args.pass_k}"] = pk["accuracy"]
    lines.append(f"sampled (T={args.temperature}) pass@{args.pass_k}: {pk['accuracy']:.4f}, mean pass@1 of the "
                 f"samples {pk.get('pass@1', float('nan')):.4f} on {pk['n']} problems")
for line in lines:
    print0(line)
logger.log({"step": args.num_steps, **{k.replace(" ", "_"): v for k, v in summary.items()}})
if master:
    from nanochat.report import get_report
    start = f"{args.source}/{input_meta['tag']}@{input_meta['step']}"
    get_report().log("Chat RL", [vars(args), {"start checkpoint": start, "loss norm": loss_norm,
                                              "minutes": (time.time() - t_start) / 60}, *lines],
                     summary={f"{args.task} {k}": v for k, v in summary.items()}, column="rl")
print0(f"done: checkpoints in {ckpt_dir}, metrics in {logger.path}")
logger.finish()
compute_cleanup()
