"""
Base pretraining: next-token prediction on the text shards (or a synthetic toy language), with periodic
validation bits-per-byte, CORE, samples, atomic checkpoints and exact resume.

`--depth` is the one size dial: width, heads, learning-rate scaling and the horizon follow from it.

    python -m scripts.base_train                                  # CPU: depth 4, small batches (offline default)
    python -m scripts.base_train --depth 2 --num-iterations 50    # a one-minute CPU smoke run
    python -m scripts.base_train --data synthetic --depth 2       # no tokenizer or shards needed
    python -m scripts.base_train --depth 20                       # one GPU (bf16, torch.compile)
    torchrun --standalone --nproc_per_node=8 -m scripts.base_train --depth 20    # 8 GPUs
    python -m scripts.base_train --resume                         # continue from the latest complete checkpoint

Outputs: checkpoints in <base_dir>/checkpoints/base/<model-tag>/, metrics in <base_dir>/runs/<run>/metrics.jsonl.
"""
import sys
import math
import time
import argparse

import torch
import torch.distributed as dist

from nanochat.common import (compute_init, compute_cleanup, print0, require_nonnegative, require_positive, GracefulStop,
                             MetricsLogger)
from nanochat.gpt import GPTConfig, build_model
from nanochat.optim import setup_optimizer
from nanochat.checkpoint import (checkpoint_dir, find_latest_step, load_checkpoint, save_checkpoint,
                                 get_rng_state, restore_training_state)
from nanochat.loss_eval import evaluate_bpb
from nanochat.report import get_report

# -----------------------------------------------------------------------------
# arguments (defaults that depend on the device are filled in below, from PRESETS)

parser = argparse.ArgumentParser(description="Pretrain the base model.")
# model
parser.add_argument("--depth", type=int, default=None, help="number of layers; width = 64*depth (default: 20 on GPU, 4 on CPU)")
parser.add_argument("--max-seq-len", type=int, default=None, help="context length in tokens (default: 2048 GPU, 256 CPU)")
# data
parser.add_argument("--data", choices=["shards", "synthetic"], default="shards", help="'shards': tokenized text shards from nanochat.dataset; 'synthetic': a toy language, no tokenizer needed")
parser.add_argument("--vocab-size", type=int, default=512, help="vocabulary size for --data synthetic (shards use the tokenizer's)")
# horizon: the first of these that is > 0 wins
parser.add_argument("--num-iterations", type=int, default=-1, help="number of optimizer steps (-1: derive from the flags below)")
parser.add_argument("--target-flops", type=float, default=-1.0, help="train for this many FLOPs (-1: off)")
parser.add_argument("--target-param-data-ratio", type=float, default=20.0, help="tokens per parameter; 20 is Chinchilla-optimal (arXiv 2203.15556)")
# batch
parser.add_argument("--device-batch-size", type=int, default=None, help="sequences per forward pass per process (default: 32 GPU, 8 CPU); lower it if you run out of memory")
parser.add_argument("--total-batch-size", type=int, default=None, help="tokens per optimizer step over all processes, reached by gradient accumulation (default: 524288 GPU, 4096 CPU)")
# optimization
parser.add_argument("--embedding-lr", type=float, default=0.2, help="AdamW lr of the token embedding (scaled by (n_embd/768)^-0.5)")
parser.add_argument("--unembedding-lr", type=float, default=0.004, help="AdamW lr of the lm_head (scaled by (n_embd/768)^-0.5)")
parser.add_argument("--matrix-lr", type=float, default=0.02, help="Muon lr of the block matrices")
parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay of embedding and lm_head")
parser.add_argument("--warmup-ratio", type=float, default=0.0, help="fraction of steps of linear lr warmup")
parser.add_argument("--warmdown-ratio", type=float, default=0.2, help="fraction of steps of linear lr decay at the end")
parser.add_argument("--final-lr-frac", type=float, default=0.0, help="lr multiplier reached at the end of the warmdown")
# evaluation and logging
parser.add_argument("--eval-every", type=int, default=None, help="validation bpb every N steps, -1 off (default: 250 GPU, 50 CPU)")
parser.add_argument("--eval-tokens", type=int, default=None, help="tokens of validation data per bpb evaluation (default: 10*524288 GPU, 16384 CPU)")
parser.add_argument("--core-every", type=int, default=None, help="CORE metric every N steps, -1 off (default: 2000 GPU, -1 CPU)")
parser.add_argument("--core-max-per-task", type=int, default=500, help="examples per CORE task during training (-1: all)")
parser.add_argument("--sample-every", type=int, default=None, help="print samples from a few prompts every N steps, -1 off (default: 2000 GPU, 100 CPU)")
parser.add_argument("--run", type=str, default=None, help="run name: enables wandb (if installed) and names the metrics dir (default: the model tag)")
# checkpoints
parser.add_argument("--model-tag", type=str, default=None, help="checkpoint subdirectory (default: d<depth>)")
parser.add_argument("--save-every", type=int, default=-1, help="checkpoint every N steps (the last step is always saved); -1: only at the end")
parser.add_argument("--keep-last", type=int, default=3, help="keep this many newest checkpoints")
parser.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint of --model-tag")
parser.add_argument("--stop-after", type=int, default=-1, help="save and exit after this step (to split a run across jobs; --resume continues it)")
# runtime
parser.add_argument("--device-type", type=str, default="", help="cuda|cpu|mps (default: autodetect)")
parser.add_argument("--seed", type=int, default=42, help="seed of the initial weights")
parser.add_argument("--no-compile", action="store_true", help="skip torch.compile on CUDA")
parser.add_argument("--debug-nan-step", type=int, default=-1, help="(testing) make the loss NaN at this step to exercise the non-finite-loss stop")
args = parser.parse_args()

# -----------------------------------------------------------------------------
# compute, and the device-dependent defaults (announced, so a run says what it will do)

ci = compute_init(args.device_type, seed=args.seed)
device, master = ci.device, ci.rank == 0
PRESETS = dict(
    gpu=dict(depth=20, max_seq_len=2048, device_batch_size=32, total_batch_size=524288, eval_every=250,
             eval_tokens=10 * 524288, core_every=2000, sample_every=2000),
    cpu=dict(depth=4, max_seq_len=256, device_batch_size=8, total_batch_size=4096, eval_every=50,
             eval_tokens=16384, core_every=-1, sample_every=100),
)
preset = PRESETS["gpu" if ci.device_type == "cuda" else "cpu"]
for key, value in preset.items():
    if getattr(args, key) is None:
        setattr(args, key, value)
require_positive(parser, args, ["depth", "max_seq_len", "device_batch_size", "total_batch_size", "eval_tokens",
                                 "keep_last"])
if args.data == "synthetic" and args.vocab_size < 2:
    parser.error("--vocab-size must be >= 2")
require_nonnegative(parser, args, ["embedding_lr", "unembedding_lr", "matrix_lr", "weight_decay"])
if not (0 <= args.warmup_ratio <= 1 and 0 <= args.warmdown_ratio <= 1 and args.warmup_ratio + args.warmdown_ratio <= 1):
    parser.error("--warmup-ratio and --warmdown-ratio must lie in [0, 1] and add up to at most 1")
if not 0 <= args.final_lr_frac <= 1:
    parser.error("--final-lr-frac must lie in [0, 1]")
print0(f"device {device} ({ci.device_type}), compute dtype {ci.dtype}, {ci.world_size} process(es); "
       f"settings: " + ", ".join(f"{k}={getattr(args, k)}" for k in preset))

# -----------------------------------------------------------------------------
# tokenizer and data


def make_loader(split):
    """Batches (inputs, targets) of (device_batch_size, max_seq_len) for this rank."""
    if args.data == "synthetic":
        from nanochat.synthetic_data import SyntheticLoader
        return SyntheticLoader(vocab_size, args.device_batch_size, args.max_seq_len, split, device=device,
                               rank=ci.rank, world_size=ci.world_size)
    from nanochat.dataloader import DataLoader
    return DataLoader(tokenizer, args.device_batch_size, args.max_seq_len, split, device=device)


if args.data == "synthetic":
    tokenizer = None
    vocab_size = args.vocab_size
    token_bytes = torch.ones(vocab_size, dtype=torch.long, device=device)  # "bpb" = bits per token here
else:
    from nanochat.tokenizer import get_tokenizer_or_exit, get_token_bytes
    tokenizer = get_tokenizer_or_exit(hint=" (or use --data synthetic)")
    vocab_size = tokenizer.get_vocab_size()
    token_bytes = get_token_bytes(tokenizer, device)

# -----------------------------------------------------------------------------
# the model, sized by --depth


num_layers = args.depth
model_dim = args.depth * 64  # aspect ratio 64: width grows with depth
num_heads = max(1, math.ceil(model_dim / 128))  # aim for head_dim 128
while model_dim % num_heads or (model_dim // num_heads) % 2:  # odd depths: next head count that divides
    num_heads += 1
config = GPTConfig(sequence_len=args.max_seq_len, vocab_size=vocab_size, n_layer=num_layers, n_head=num_heads,
                   n_kv_head=num_heads, n_embd=model_dim)
orig_model = build_model(config, device, ci.dtype)
num_params = orig_model.num_params()
num_flops_per_token = orig_model.estimate_flops()
print0(f"model: {config}")
print0(f"parameters: {num_params:,}; training FLOPs per token: {num_flops_per_token:e}")

# -----------------------------------------------------------------------------
# batch and horizon

tokens_per_fwdbwd = args.device_batch_size * args.max_seq_len * ci.world_size  # per micro-step, all ranks
if args.total_batch_size % tokens_per_fwdbwd != 0:
    print0(f"error: --total-batch-size {args.total_batch_size} must be a multiple of device-batch-size * "
           f"seq-len * processes = {tokens_per_fwdbwd}; pick e.g. --total-batch-size {tokens_per_fwdbwd * 4}")
    sys.exit(2)
grad_accum_steps = args.total_batch_size // tokens_per_fwdbwd
if args.num_iterations > 0:
    num_iterations = args.num_iterations
elif args.target_flops > 0:
    num_iterations = round(args.target_flops / (num_flops_per_token * args.total_batch_size))
elif args.target_param_data_ratio > 0:
    num_iterations = round(args.target_param_data_ratio * num_params / args.total_batch_size)
else:
    print0("error: set one of --num-iterations, --target-flops, --target-param-data-ratio")
    sys.exit(2)
num_iterations = max(1, num_iterations)
total_tokens = args.total_batch_size * num_iterations
print0(f"{num_iterations:,} steps x {args.total_batch_size:,} tokens = {total_tokens:,} tokens "
       f"({total_tokens / num_params:.1f} per parameter), gradient accumulation {grad_accum_steps}, "
       f"{num_flops_per_token * total_tokens:e} FLOPs")

# -----------------------------------------------------------------------------
# optimizer and schedules

optimizer = setup_optimizer(orig_model, embedding_lr=args.embedding_lr, unembedding_lr=args.unembedding_lr,
                            matrix_lr=args.matrix_lr, weight_decay=args.weight_decay)


def lr_multiplier(it):
    """Linear warmup, constant, then linear warmdown to final_lr_frac (trapezoid; arXiv 2405.18392)."""
    warmup = round(args.warmup_ratio * num_iterations)
    warmdown = round(args.warmdown_ratio * num_iterations)
    if it < warmup:
        return (it + 1) / warmup
    if it <= num_iterations - warmdown:
        return 1.0
    progress = (num_iterations - it) / warmdown
    return progress + (1 - progress) * args.final_lr_frac


def muon_momentum(it):
    """Muon momentum 0.85 -> 0.95 over the first 300 steps: less inertia while the weights move fast."""
    frac = min(it / 300, 1.0)
    return (1 - frac) * 0.85 + frac * 0.95


# -----------------------------------------------------------------------------
# resume (model, optimizer shard, dataloader, RNG, loop state) or start fresh

model_tag = args.model_tag or f"d{args.depth}"
ckpt_dir = checkpoint_dir("base", model_tag)
train_loader = make_loader("train")
start_step, loop = 0, dict(smooth_loss=0.0, total_time=0.0, val_bpb=None)
if args.resume:
    step = find_latest_step(ckpt_dir)
    if step is None:
        print0(f"error: --resume but no complete checkpoint in {ckpt_dir}; drop --resume to start fresh")
        sys.exit(2)
    try:
        model_state, optim_state, rank_state, meta = load_checkpoint(ckpt_dir, step, device)
    except RuntimeError as e:  # e.g. saved by a different number of processes
        print0(f"error: {e}")
        sys.exit(2)
    if meta["model_config"] != config.to_dict():
        print0(f"error: checkpoint config {meta['model_config']} differs from this run's {config.to_dict()}; "
               f"resume with the same --depth/--max-seq-len/data flags, or use another --model-tag")
        sys.exit(2)
    restore_training_state(orig_model, optimizer, train_loader, rank_state, model_state, optim_state)
    start_step, loop = step, meta["loop"]
    print0(f"resumed from {ckpt_dir} at step {step}")
    del model_state, optim_state

model = orig_model
if ci.device_type == "cuda" and not args.no_compile:
    model = torch.compile(orig_model, dynamic=False)  # fuses the elementwise ops; CPU runs eagerly

run_name = args.run or model_tag
logger = MetricsLogger(run_name, config=vars(args), use_wandb=args.run is not None)
logger.truncate_after(start_step)  # a resumed run rewrites what came after its checkpoint
print0(f"metrics: {logger.path}; checkpoints: {ckpt_dir}")


def save(step):
    meta = dict(model_config=config.to_dict(), args=vars(args), loop=loop, num_iterations=num_iterations)
    rank_state = dict(loader=train_loader.state_dict(), rng=get_rng_state())
    path = save_checkpoint(ckpt_dir, step, orig_model, optimizer, meta, rank_state, keep_last=args.keep_last)
    print0(f"saved {path}")


def is_finite_or_exit(loss_value, step):
    if math.isfinite(loss_value):
        return
    last = find_latest_step(ckpt_dir)
    print0(f"error: loss is {loss_value} at step {step}: training diverged and was stopped before the update. "
           f"The last good checkpoint is {'step ' + str(last) if last is not None else 'none'}; lower "
           f"--matrix-lr/--embedding-lr or add --warmup-ratio, then --resume")
    compute_cleanup()
    sys.exit(3)


def all_mean(t):
    if ci.ddp:
        dist.all_reduce(t)
        t /= ci.world_size
    return t


SAMPLE_PROMPTS = ["The capital of France is", "The chemical symbol of gold is", "If yesterday was Friday, then "
                  "tomorrow will be", "The opposite of hot is", "My favorite color is"]
PEAK_FLOPS = 989e12 if ci.device_type == "cuda" else None  # H100 SXM dense bf16; MFU is printed on GPU only

# -----------------------------------------------------------------------------
# the loop: evaluate / sample / save at the top of a step, then one optimizer step

stop = GracefulStop()  # Ctrl-C / SIGTERM: finish the step, save, exit (a second one quits at once)
step = start_step
for step in range(start_step, num_iterations + 1):
    last_step = step == num_iterations
    stopping = last_step or step == args.stop_after or bool(stop.requested(device))

    fresh = step > start_step or start_step == 0  # a resumed run already evaluated its first step
    if fresh and args.eval_every > 0 and (last_step or step % args.eval_every == 0):
        model.eval()
        eval_steps = max(1, args.eval_tokens // tokens_per_fwdbwd)
        loop["val_bpb"] = evaluate_bpb(model, make_loader("val"), eval_steps, token_bytes)
        loop.setdefault("first_val_bpb", loop["val_bpb"])  # kept in the checkpoint: the report's "before"
        print0(f"step {step:05d} | validation bpb {loop['val_bpb']:.4f}")
        logger.log(dict(step=step, val_bpb=loop["val_bpb"]))
        model.train()

    if tokenizer is not None and args.core_every > 0 and step > 0 and (last_step or step % args.core_every == 0):
        from nanochat.core_eval import evaluate_core
        orig_model.eval()
        core = evaluate_core(orig_model, tokenizer, device, max_per_task=args.core_max_per_task)
        print0(f"step {step:05d} | CORE {core['core']:.4f}")
        logger.log(dict(step=step, core=core["core"], **{f"core/{k}": v for k, v in core["centered"].items()}))
        orig_model.train()

    if master and tokenizer is not None and args.sample_every > 0 and (last_step or (
            step > 0 and step % args.sample_every == 0)):
        orig_model.eval()
        for prompt in SAMPLE_PROMPTS:
            ids = tokenizer.encode(prompt, prepend=tokenizer.get_bos_token_id())
            print0("  sample:", tokenizer.decode(ids + list(orig_model.generate(ids, max_tokens=16))))
        orig_model.train()

    if step > start_step and (stopping or (args.save_every > 0 and step % args.save_every == 0)):
        save(step)
    if stopping:
        break

    # one optimizer step: grad_accum_steps micro-batches of device_batch_size sequences
    t0 = time.time()
    try:
        loss_sum = torch.zeros((), device=device)
        for micro_step in range(grad_accum_steps):
            x, y = next(train_loader)
            loss = model(x, y)
            if step == args.debug_nan_step:
                loss = loss * float("nan")
            loss_sum += loss.detach()
            (loss / grad_accum_steps).backward()  # mean over micro-batches
        train_loss = all_mean(loss_sum / grad_accum_steps).item()  # every rank sees the same value
        is_finite_or_exit(train_loss, step)  # before the update: the weights stay as good as they were
        lrm = lr_multiplier(step)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lrm
            if group["kind"] == "muon":
                group["momentum"] = muon_momentum(step)
        optimizer.step()  # the first step allocates the optimizer state: it can run out of memory too
        model.zero_grad(set_to_none=True)
    except torch.OutOfMemoryError:
        print0(f"error: out of memory at --device-batch-size {args.device_batch_size}; lower it to "
               f"{max(1, args.device_batch_size // 2)} (gradient accumulation keeps --total-batch-size)")
        compute_cleanup()
        sys.exit(4)
    if ci.device_type == "cuda":
        torch.cuda.synchronize()
    dt = time.time() - t0

    # logging: an EMA of the loss (debiased), throughput, MFU, ETA
    loop["smooth_loss"] = 0.9 * loop["smooth_loss"] + 0.1 * train_loss
    smooth = loop["smooth_loss"] / (1 - 0.9 ** (step + 1))
    if step > start_step + 1:  # the first steps include compilation and warmup
        loop["total_time"] += dt
    tok_per_sec = args.total_batch_size / dt
    mfu = 100 * num_flops_per_token * tok_per_sec / (PEAK_FLOPS * ci.world_size) if PEAK_FLOPS else None
    eta = (num_iterations - step - 1) * dt
    print0(f"step {step + 1:05d}/{num_iterations:05d} | loss {train_loss:.6f} (smooth {smooth:.4f}) | "
           f"lrm {lrm:.2f} | dt {dt * 1000:.0f}ms | tok/s {tok_per_sec:,.0f}"
           + (f" | mfu {mfu:.1f}%" if mfu is not None else "") + f" | eta {eta / 60:.1f}m")
    logger.log(dict(step=step + 1, loss=train_loss, lrm=lrm, dt=dt, tok_per_sec=tok_per_sec, mfu=mfu))

stop.finish(step, saved=step > start_step)
print0(f"done: step {step}, training time {loop['total_time'] / 60:.2f}m, val bpb {loop['val_bpb']}")
get_report().log("Base model training", [vars(args), {
    "parameters": model.num_params(), "FLOPs per token": num_flops_per_token, "iterations": num_iterations,
    "tokens": num_iterations * args.total_batch_size, "training time (min)": loop["total_time"] / 60,
    "val bpb at start": loop.get("first_val_bpb"), "val bpb at end": loop["val_bpb"]}],
    summary={"val bpb": loop["val_bpb"]}, column="base")
logger.finish()
compute_cleanup()
