"""
Checkpoints: atomic save, find the latest complete one, load for resuming or for inference.

Layout (every stage: base, mid, sft, rl, rft, cft, dpo, distill):

    <base_dir>/checkpoints/<stage>/<tag>/step_000123/
        model.pt              model state_dict (tensors only)
        optim_rank000.pt ...  each rank's optimizer shard (MuonAdamW keeps state only for the params it owns)
        state_rank000.pt ...  each rank's RNG states and dataloader state
        meta.json             model config, args, step, loop state, world size
        COMPLETED             written last, after everything else is on disk

Atomicity: everything is written into `.tmp_step_000123/`, fsync'd, the directory is renamed to
`step_000123/` (rename is atomic on POSIX), then COMPLETED is written and fsync'd. A step directory without
COMPLETED, or a leftover `.tmp_*`, is a crashed save: ignored by `find_latest_step` and removed by `clean`.
Nothing is pickled: tensors and plain containers via torch.save, loaded with `weights_only=True`.

    from nanochat.checkpoint import load_model
    model, tokenizer, meta = load_model("base", device)          # newest tag, latest step
"""
import os
import json
import functools
import random
import shutil

import numpy as np
import torch
import torch.distributed as dist

from nanochat.common import get_base_dir

COMPLETED = "COMPLETED"
# meta.json "format": 2 since rotary embeddings pair adjacent head dims (2i, 2i+1); format 1 (no field) paired
# dim i with i + head_dim/2. Format-1 weights are converted on load (_upgrade_rotary_pairs), which is exact.
FORMAT = 2
STAGES = ("base", "mid", "sft", "rl", "rft", "cft", "dpo", "distill")

# -----------------------------------------------------------------------------
# paths


def checkpoint_dir(stage, tag):
    if stage not in STAGES:
        raise ValueError(f"unknown checkpoint stage {stage!r}; use one of {', '.join(STAGES)}")
    return os.path.join(get_base_dir(), "checkpoints", stage, tag)


def step_name(step):
    return f"step_{step:06d}"


def complete_steps(ckpt_dir):
    """Sorted steps that have a COMPLETED marker."""
    if not os.path.isdir(ckpt_dir):
        return []
    steps = []
    for name in os.listdir(ckpt_dir):
        if name.startswith("step_") and os.path.exists(os.path.join(ckpt_dir, name, COMPLETED)):
            steps.append(int(name[len("step_"):]))
    return sorted(steps)


def find_latest_step(ckpt_dir):
    """The newest complete step in ckpt_dir, or None."""
    steps = complete_steps(ckpt_dir)
    return steps[-1] if steps else None


def clean(ckpt_dir, keep_last=None):
    """Remove crashed saves (.tmp_*, step dirs without COMPLETED) and all but the newest `keep_last` steps."""
    if not os.path.isdir(ckpt_dir):
        return
    for name in os.listdir(ckpt_dir):
        path = os.path.join(ckpt_dir, name)
        if name.startswith(".tmp_step_") or (name.startswith("step_") and not os.path.exists(
                os.path.join(path, COMPLETED))):
            shutil.rmtree(path, ignore_errors=True)
    if keep_last:
        for step in complete_steps(ckpt_dir)[:-keep_last]:
            shutil.rmtree(os.path.join(ckpt_dir, step_name(step)), ignore_errors=True)


# -----------------------------------------------------------------------------
# durable writes


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path, obj=None, text=None):
    with open(path, "wb") as f:
        if text is not None:
            f.write(text.encode())
        else:
            torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


@functools.lru_cache(maxsize=1)
def git_sha():
    """The repo's commit (recorded in meta.json), or None outside a git checkout; asked once per process."""
    import subprocess
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


# -----------------------------------------------------------------------------
# RNG states as plain containers (numpy's state tuple holds an ndarray, which weights_only refuses)


def get_rng_state():
    np_state = np.random.get_state()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=[np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        python=list(random.getstate()),
    )
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -----------------------------------------------------------------------------
# save


def save_checkpoint(ckpt_dir, step, model, optimizer=None, meta=None, rank_state=None, keep_last=None):
    """
    Save one step atomically. Under torchrun every rank must call it (it uses barriers): each rank writes its
    optimizer shard and rank_state, rank 0 writes the model and meta.json, renames, then marks COMPLETED.
    `model` should be the uncompiled module (its state_dict keys have no `_orig_mod.` prefix).
    """
    rank = _rank()
    final = os.path.join(ckpt_dir, step_name(step))
    tmp = os.path.join(ckpt_dir, ".tmp_" + step_name(step))
    if rank == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        clean(ckpt_dir)  # leftovers of an earlier crash
        os.makedirs(tmp)
    _barrier()
    if optimizer is not None:
        _write(os.path.join(tmp, f"optim_rank{rank:03d}.pt"), optimizer.state_dict())
    if rank_state is not None:
        _write(os.path.join(tmp, f"state_rank{rank:03d}.pt"), rank_state)
    _barrier()
    if rank == 0:
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        _write(os.path.join(tmp, "model.pt"), model.state_dict())
        meta = dict(meta or {}, step=step, world_size=world_size, git_sha=git_sha(), format=FORMAT)
        _write(os.path.join(tmp, "meta.json"), text=json.dumps(meta, indent=2, default=str))
        _fsync_dir(tmp)
        if os.path.exists(final):  # re-saving the same step: the older steps stay as "latest" meanwhile
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(ckpt_dir)
        _write(os.path.join(final, COMPLETED), text="ok\n")
        _fsync_dir(final)
        clean(ckpt_dir, keep_last)
    _barrier()
    return final


# -----------------------------------------------------------------------------
# load


def _read(path, load):
    """load(path), or a ValueError that names the file: a truncated or damaged file (a disk that filled up, a
    partial copy) otherwise surfaces as a zip or JSON error that says neither which file nor what to do."""
    try:
        return load(path)
    except Exception as e:  # noqa: BLE001 - any failure to decode this one file means the same thing
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
                         f"the checkpoint is damaged; delete {os.path.dirname(path)} to fall back to the step before "
                         f"it, or train again") from e


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def load_checkpoint(ckpt_dir, step=None, device="cpu", load_optimizer=True):
    """
    (model_state, optim_state, rank_state, meta) of a complete step (default: the latest) for this rank.
    optim_state / rank_state are None when not asked for or not saved.
    """
    step = find_latest_step(ckpt_dir) if step is None else step
    path = os.path.join(ckpt_dir, step_name(step)) if step is not None else None
    if path is None or not os.path.exists(os.path.join(path, COMPLETED)):
        raise FileNotFoundError(f"no complete checkpoint{'' if step is None else f' at step {step}'} in "
                                f"{ckpt_dir}; train one first (e.g. `python -m scripts.base_train`)")
    meta = _read(os.path.join(path, "meta.json"), _read_json)
    model_state = _read(os.path.join(path, "model.pt"), lambda p: torch.load(p, map_location=device, weights_only=True))
    if meta.get("format", 1) < 2 and "model_config" in meta:
        if load_optimizer:
            raise RuntimeError(f"checkpoint {path} predates adjacent-pair rotary embeddings (format 1): it loads for "
                               "inference or as the start of a next stage, but its training cannot be resumed")
        model_state = _upgrade_rotary_pairs(model_state, meta["model_config"])
    rank = _rank()
    optim_state = rank_state = None
    if load_optimizer:
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if meta.get("world_size", 1) != world_size:
            raise RuntimeError(f"checkpoint {path} was saved by {meta['world_size']} processes but this run has "
                               f"{world_size}; resume with --nproc_per_node={meta['world_size']}")
        optim_path = os.path.join(path, f"optim_rank{rank:03d}.pt")
        if os.path.exists(optim_path):
            optim_state = _read(optim_path, lambda p: torch.load(p, map_location=device, weights_only=True))
        state_path = os.path.join(path, f"state_rank{rank:03d}.pt")
        if os.path.exists(state_path):
            rank_state = _read(state_path, lambda p: torch.load(p, map_location="cpu", weights_only=True))
    return model_state, optim_state, rank_state, meta


def _upgrade_rotary_pairs(model_state, config):
    """
    Format 1 -> 2: rotary used to pair head dim i with i + D/2, now it pairs 2i with 2i + 1. Reordering the rows
    of every c_q and c_k weight the same way within each head (new row 2i = old row i, 2i + 1 = old i + D/2)
    gives exactly the old model: q and k carry the same values in the new places, QK-norm and q . k ignore the
    order, and v is untouched.
    """
    D = config["n_embd"] // config["n_head"]
    perm = torch.arange(D).view(2, D // 2).T.reshape(-1)  # [0, D/2, 1, D/2 + 1, ...]
    upgraded = dict(model_state)
    for name, w in model_state.items():
        if name.endswith(("attn.c_q.weight", "attn.c_k.weight")):
            upgraded[name] = w.view(-1, D, w.size(-1))[:, perm].reshape(w.shape)  # (heads * D, C)
    return upgraded


def model_from_checkpoint(ckpt_dir, device, step=None):
    """(model, meta): a GPT built from meta.json's config with the saved weights, in eval mode."""
    from nanochat.gpt import GPTConfig, build_model
    model_state, _, _, meta = load_checkpoint(ckpt_dir, step, device, load_optimizer=False)
    model = build_model(GPTConfig(**meta["model_config"]), torch.device(device))
    model_state = {k.removeprefix("_orig_mod."): v for k, v in model_state.items()}
    model.load_state_dict(model_state, strict=True)
    model.eval()
    return model, meta


def find_tag(stage):
    """The tag under checkpoints/<stage>/ whose latest complete checkpoint is the newest on disk."""
    root = os.path.join(get_base_dir(), "checkpoints", stage)
    best, best_time = None, -1.0
    for tag in (os.listdir(root) if os.path.isdir(root) else []):
        step = find_latest_step(os.path.join(root, tag))
        if step is not None:
            t = os.path.getmtime(os.path.join(root, tag, step_name(step), COMPLETED))
            if t > best_time:
                best, best_time = tag, t
    if best is None:
        raise FileNotFoundError(f"no complete {stage} checkpoint under {root}; run the {stage} stage first "
                                f"(for base: `python -m scripts.base_train`)")
    return best


def load_model(stage, device, tag=None, step=None):
    """(model, tokenizer, meta) for inference or the next training stage."""
    from nanochat.tokenizer import get_tokenizer
    tag = tag or find_tag(stage)
    model, meta = model_from_checkpoint(checkpoint_dir(stage, tag), device, step)
    tokenizer = get_tokenizer()
    if tokenizer.get_vocab_size() != model.config.vocab_size:
        raise RuntimeError(f"tokenizer vocab {tokenizer.get_vocab_size()} != model vocab "
                           f"{model.config.vocab_size}: the tokenizer was retrained after this checkpoint; "
                           f"retrain the model or restore the tokenizer it was trained with")
    meta["tag"] = tag
    return model, tokenizer, meta


def load_model_or_exit(stage, device, tag=None, step=None):
    """load_model for a script: a missing, damaged or mismatched checkpoint is one line on stderr, exit 1."""
    try:
        return load_model(stage, device, tag=tag, step=step)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise SystemExit(f"error: {e}")


def restore_training_state(model, optimizer, loader, rank_state, model_state, optim_state):
    """Put a run back exactly where its checkpoint left it: weights, optimizer, data position, RNG streams."""
    model.load_state_dict(model_state)
    optimizer.load_state_dict(optim_state)
    loader.load_state_dict(rank_state["loader"])
    set_rng_state(rank_state["rng"])
