"""
Shared runtime helpers: compute init/cleanup, rank info, print0, the base directory, the dtype policy, and the
small pieces every script needs (checks of flag values, running a stage as a subprocess).

Every script calls `compute_init()` first and `compute_cleanup()` last, so it runs unchanged on
1 CPU process, 1 GPU, or `torchrun --nproc_per_node=N` (PyTorch distributed reads RANK/WORLD_SIZE/
LOCAL_RANK from the environment that torchrun sets).
"""
import os
import sys
import ctypes
import logging
import random
import signal
import subprocess
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger("nanochat")

# -----------------------------------------------------------------------------
# rank info and printing


def get_dist_info():
    """(is_ddp, rank, local_rank, world_size) from torchrun's environment; (False, 0, 0, 1) otherwise."""
    if all(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return True, int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    return False, 0, 0, 1


def is_master():
    return get_dist_info()[1] == 0


def print0(*args, **kwargs):
    """print() on rank 0 only, flushed so logs interleave sensibly under torchrun."""
    if is_master():
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)


# -----------------------------------------------------------------------------
# the base directory: every artifact (data, tokenizer, checkpoints, reports) lives under it


def get_base_dir():
    """$NANOCHAT_BASE_DIR, default ~/.cache/nanochat; created on first use."""
    base = os.environ.get("NANOCHAT_BASE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nanochat")
    os.makedirs(base, exist_ok=True)
    return base


# -----------------------------------------------------------------------------
# device and dtype policy


def autodetect_device_type():
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_device_type(device_type="", flag="--device-type"):
    """The device type a script asked for ("" = autodetect), checked once here: a clear message for a name torch
    does not know or a device this machine lacks, instead of a traceback from deep inside torch."""
    device_type = device_type or autodetect_device_type()
    if device_type not in ("cpu", "cuda", "mps"):
        raise SystemExit(f"{flag} {device_type!r} is not supported: use cpu, cuda or mps (or leave it out to autodetect)")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"{flag} cuda was asked for but no CUDA device is visible; use {flag} cpu")
    mps = getattr(torch.backends, "mps", None)
    if device_type == "mps" and not (mps is not None and mps.is_available()):
        raise SystemExit(f"{flag} mps was asked for but this machine has no usable MPS device; use {flag} cpu")
    return device_type


def compute_dtype(device_type):
    """
    The one place that decides the activation dtype. bf16 on CUDA SM80+ (Ampere and later) where it is fast
    and range-safe; fp32 elsewhere (CPU bf16 matmuls are slow and MPS bf16 is patchy). Weights stay fp32 for
    the optimizer either way. Override with NANOCHAT_DTYPE=float32|bfloat16|float16.
    """
    override = os.environ.get("NANOCHAT_DTYPE")
    if override:
        if override not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"NANOCHAT_DTYPE={override!r}: expected float32, bfloat16 or float16")
        return getattr(torch, override)
    if device_type == "cuda" and torch.cuda.get_device_capability()[0] >= 8:
        return torch.bfloat16
    return torch.float32


def keep_freed_memory():
    """
    Make glibc's malloc keep freed memory instead of handing it back to the kernel. By default it unmaps
    large blocks (above a threshold that tops out at 32 MB) and trims the heap top as soon as they are freed,
    so each training step's fresh activations are new pages that the kernel must fault in and zero again:
    ~23-42k page faults (~100-170 MB) per d4 CPU step here, 5-15% of the step.
    jemalloc and tcmalloc keep such memory by default; this asks glibc to do the same (mallopt M_MMAP_THRESHOLD
    and M_TRIM_THRESHOLD at 1 GiB). The cost: the process holds on to its peak heap. Returns True if applied;
    a no-op elsewhere (macOS, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 and mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1


# -----------------------------------------------------------------------------
# init / cleanup


@dataclass
class ComputeInfo:
    ddp: bool
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    device_type: str
    dtype: torch.dtype


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def compute_init(device_type="", seed=42):
    """
    Pick the device (autodetect when ""), seed every RNG, and join the process group when launched by
    torchrun (NCCL on CUDA, gloo on CPU). Returns a ComputeInfo.
    """
    device_type = resolve_device_type(device_type)
    if not 0 <= seed < 2**32:  # numpy's limit; a traceback from seed_everything would not name the flag
        raise SystemExit(f"--seed {seed} must lie in [0, 2**32)")
    ddp, rank, local_rank, world_size = get_dist_info()
    seed_everything(seed)  # same seed on every rank: identical initial weights without a broadcast
    if device_type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device(device_type)
        if device_type == "cpu":
            keep_freed_memory()  # no page faults for every step's fresh activations
    if ddp and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device_type == "cuda" else None)
        dist.barrier()
    return ComputeInfo(ddp, rank, local_rank, world_size, device, device_type, compute_dtype(device_type))


def compute_cleanup():
    """End of a normal run. The barrier first: a rank that tears down its gloo connections while a peer is still
    finishing its last collective can abort the peer ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# -----------------------------------------------------------------------------
# metrics: one JSON line per record in <base_dir>/runs/<run>/metrics.jsonl, plus wandb when asked for


class MetricsLogger:
    """
    `log(dict)` appends a JSON line (rank 0 only) and forwards to wandb when `use_wandb` and wandb imports;
    otherwise wandb is a no-op. `truncate_after(step)` drops records past a resumed step so the file stays
    one consistent curve.
    """

    def __init__(self, run, config=None, use_wandb=False, project="nanochat"):
        import json
        self._json = json
        self.master = is_master()
        self.dir = os.path.join(get_base_dir(), "runs", run)
        self.path = os.path.join(self.dir, "metrics.jsonl")
        self.wandb = None
        if self.master:
            os.makedirs(self.dir, exist_ok=True)
            if use_wandb:
                try:
                    import wandb
                    self.wandb = wandb.init(project=project, name=run, config=config or {})
                except ImportError:
                    print0("wandb is not installed: metrics go to metrics.jsonl only (pip install wandb)")

    def truncate_after(self, step):
        if not self.master or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            keep = [line for line in f if self._json.loads(line).get("step", -1) <= step]
        with open(self.path, "w") as f:
            f.writelines(keep)

    def log(self, record):
        if not self.master:
            return
        os.makedirs(self.dir, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(self._json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log(record)

    def finish(self):
        if self.wandb is not None:
            self.wandb.finish()


# -----------------------------------------------------------------------------
# stopping a training run cleanly: Ctrl-C or a scheduler's SIGTERM


class GracefulStop:
    """
    A training loop's answer to Ctrl-C (SIGINT) or SIGTERM (a cluster preempting the job): finish the step in
    progress, save a checkpoint, exit with 128 + the signal number. Without it a Ctrl-C in hour three of a run
    that saves only at the end loses all of it. The non-zero exit stops a pipeline (speedrun.sh runs with
    `set -e`) instead of letting the next stage start from a half-trained model. A second signal quits at
    once, without saving (the checkpoint in progress, if any, is never half-written: see checkpoint.py).

        stop = GracefulStop()
        for step in ...:
            stopping = last_step or stop.requested(device)   # once per step, on every rank
            ...save and break when stopping...
        stop.finish(step)                                    # handlers restored; if stopped: message, exit
    """

    def __init__(self):
        self.signum = 0
        self.previous = {}
        if threading.current_thread() is threading.main_thread():  # Python sets handlers in the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signum:
            print(f"\n{name} again: quitting now, without saving", file=sys.stderr, flush=True)
            raise SystemExit(128 + signum)
        self.signum = signum
        print(f"\n{name}: finishing this step, then saving a checkpoint ({name} again to quit at once)",
              file=sys.stderr, flush=True)

    def requested(self, device=None):
        """The signal number if this process, or with a process group any rank, was asked to stop, else 0. The
        max over ranks makes every rank stop at the same step (a collective: call it on every rank)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.signum
        flag = torch.tensor(self.signum, dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.signum = int(flag.item())
        return self.signum

    def finish(self, step, saved=True):
        """After the loop: put the previous handlers back; if a signal ended the loop, say where and how to go
        on, and exit with 128 + the signal number."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
        if not self.signum:
            return
        what = "saved a checkpoint there; continue with --resume" if saved else "nothing new to save"
        print0(f"stopped by {signal.Signals(self.signum).name} at step {step}: {what}")
        compute_cleanup()
        sys.exit(128 + self.signum)


# -----------------------------------------------------------------------------
# script helpers: checks of flag values, stages run as subprocesses


def require_positive(parser, args, flags):
    """parser.error (usage + one line, exit 2) for the first of `flags` (argparse dests) whose value is < 1.
    None (a value a device preset fills in later) passes."""
    for flag in flags:
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")


def require_nonnegative(parser, args, flags):
    """The same for values that may be 0 but not negative (learning rates, temperatures, weight decay)."""
    for flag in flags:
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be >= 0")


def run_stage(cmd):
    """
    Run one stage of an experiment as a subprocess: `cmd` is an argument list, or a shell string (for flags the
    user passed as one string). If it fails, this script stops with the stage's exit code and one line naming
    the stage; the stage's own output, just above, says why. (subprocess.run(check=True) would add a traceback
    from here that explains nothing.)
    """
    shell = isinstance(cmd, str)
    line = cmd if shell else " ".join(cmd)
    print0(f"$ {line}")
    code = subprocess.run(cmd, shell=shell).returncode
    if code != 0:
        print(f"error: this stage failed (exit code {code}): {line}", file=sys.stderr, flush=True)
        sys.exit(code)
