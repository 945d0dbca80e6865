"""
Rejection-sampling fine-tuning (RFT, Yuan et al., arXiv 2308.01825): sample k reasoning paths per training
question from one or more SFT checkpoints, keep the correct and distinct ones (nanochat/rft.py), and fine-tune
again from the base (or mid) checkpoint on the original SFT data plus the kept paths, with the SFT loop
(nanochat/sft.py).

Sampling follows the paper: temperature 0.7, and the calculator tool OFF: the model writes its own tool
outputs, so a kept path's arithmetic is the model's, checked with the safe calculator. A path is kept when
its final answer is right and every equation in it is true; among paths with the same equation list (spaces
removed) the one farthest (summed character Levenshtein distance) from the other kept paths stays.
`--sources a,b,c` pools the paths of several checkpoints before that selection (the paper's union).
`--use-tools` samples with the calculator ON: our SFT data gives tool outputs (mask 0: the calculator writes
them), so a model never learns to write them itself, and with the tool off a small model's outputs are
wrong (docs/rft.md: 0 of 12,800 paths of a d2 model were right). With the tool on the equations are true by
construction; the final-answer check still decides.

    python -m scripts.chat_rft --sources sft --questions synthmath:1000 --num-samples 16 --use-tools  # CPU/offline
    python -m scripts.chat_rft --sources sft:s0,sft:s1,sft:s2 --source base --model-tag s0   # union of 3 models
    python -m scripts.chat_rft --sample-only --sources sft --num-samples 64                  # just the paths
    torchrun --standalone --nproc_per_node=8 -m scripts.chat_rft --questions gsm8k --data hf # 8 GPUs

Sampling runs on every rank over its share of the questions (question i on rank i % world_size) and the
ranks exchange their paths through files in the output directory. Sampled paths are cached (JSONL under
<base_dir>/rft/samples/): a later run with the same source, questions, temperature and seed and a k no larger
reuses the first k samples of each question instead of sampling again.

Outputs: the kept paths in <base_dir>/rft/<output-tag>/paths.jsonl, checkpoints in
<base_dir>/checkpoints/rft/<output-tag>/, the "Chat RFT" report section (per source: questions with a
correct path, distinct equation lists per question, paths kept).
"""
import os
import re
import json
import time
import argparse

import torch
import torch.distributed as dist

from nanochat.common import compute_init, compute_cleanup, get_base_dir, print0, require_nonnegative, require_positive
from nanochat.chat_data import build_mixture, load_stage_data
from nanochat.chat_stream import TurnDecoder
from nanochat.checkpoint import load_model
from nanochat.engine import Engine
from nanochat.rft import check_path, distinct_equation_lists, equation_key, pool_paths, select_paths
from nanochat.sft import add_train_args, check_train_args, config_from_args, load_input_model, train_chat
from nanochat.report import get_report
from tasks.common import TaskMixture, choose_source
from tasks.critique import ConversationList

# -----------------------------------------------------------------------------
# arguments: the SFT flags (the retraining) plus the sampling flags

parser = argparse.ArgumentParser(description="Rejection-sampling fine-tuning: sample, filter, retrain with SFT.")
add_train_args(parser, dict(source="base", device_batch_size=None, init_lr_frac=None, eval_every=-1,
                            eval_batches=8, eval_tasks="", eval_max_problems=50))
parser.add_argument("--examples-per-step", type=int, default=None, help="conversations per optimizer step over all processes (default: 32 GPU, 16 CPU)")
parser.add_argument("--sources", type=str, default="sft", help="checkpoints to sample from, comma-separated 'stage[:tag[:step]]' (several: the paper's union)")
parser.add_argument("--questions", type=str, default="synthmath:1000", help="training questions to sample on, a mixture spec of tasks with numeric answers (default: the first 1000 synthmath items of the offline SFT mixture)")
parser.add_argument("--num-samples", type=int, default=16, help="k: sampled paths per question per source")
parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (the paper: 0.7)")
parser.add_argument("--top-k", type=int, default=0, help="top-k of the sampler (0: the whole vocabulary)")
parser.add_argument("--max-new-tokens", type=int, default=192, help="longest sampled path in tokens (longer ones are unfinished and dropped)")
parser.add_argument("--sample-seed", type=int, default=0, help="seed of the sampler (question i uses sample_seed + i)")
parser.add_argument("--use-tools", action="store_true", help="keep the calculator ON while sampling (the paper's setting is off)")
parser.add_argument("--sample-only", action="store_true", help="stop after writing the kept paths (no retraining)")
parser.add_argument("--no-sft-data", action="store_true", help="retrain on the kept paths only (the paper trains on SFT data + kept paths)")
args = parser.parse_args()
check_train_args(parser, args)
require_positive(parser, args, ["examples_per_step", "num_samples", "max_new_tokens"])
require_nonnegative(parser, args, ["temperature", "top_k"])
args.schedule = "linear"

ci = compute_init(args.device_type, seed=args.seed)
PRESETS = dict(gpu=dict(device_batch_size=4, examples_per_step=32, init_lr_frac=0.02),
               cpu=dict(device_batch_size=8, examples_per_step=16, init_lr_frac=0.1))
for key, value in PRESETS["gpu" if ci.device_type == "cuda" else "cpu"].items():
    if getattr(args, key) is None:
        setattr(args, key, value)
if args.num_samples < 1 or not 0.0 <= args.temperature:
    raise SystemExit("error: --num-samples must be >= 1 and --temperature >= 0")

# -----------------------------------------------------------------------------
# the questions: training items with a numeric reference answer


def parse_source(spec):
    stage, tag, step = (spec.split(":") + [None, None])[:3]
    if not stage:
        raise SystemExit(f"error: bad --sources item {spec!r}; write stage[:tag[:step]], e.g. sft:d2")
    return stage, tag or None, int(step) if step else None


try:
    mode = choose_source(args.data, "rft questions")
    question_task, _ = build_mixture(args.questions, "train", mode, seed=args.data_seed)  # the SFT data's first items
except (ValueError, RuntimeError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}")
questions = [c for c in question_task if c.get("answer") is not None]
if not questions:
    raise SystemExit(f"error: --questions {args.questions!r} has no items with a numeric 'answer'; use a math task, "
                     f"e.g. synthmath12:1000 or gsm8k")
print0(f"{len(questions):,} questions with answers (of {len(question_task):,} in {args.questions})")

# -----------------------------------------------------------------------------
# sampling, with a cache: one JSONL line per question: its correct paths (sample index j, text, parts)


def cache_path(stage, tag, step, k):
    name = f"{stage}_{tag}_{step}_{args.questions}_T{args.temperature}_seed{args.sample_seed}_data{args.data_seed}_tools{int(args.use_tools)}"
    return os.path.join(get_base_dir(), "rft", "samples", re.sub(r"[^A-Za-z0-9_.-]", "-", name) + f"_k{k}.jsonl")


def find_cached(stage, tag, step, k):
    """A finished cache file of this source and settings with at least k samples per question, or None."""
    stem = cache_path(stage, tag, step, 0)[: -len("_k0.jsonl")]
    folder = os.path.dirname(stem)
    best = None
    for f in os.listdir(folder) if os.path.isdir(folder) else []:
        m = re.fullmatch(re.escape(os.path.basename(stem)) + r"_k(\d+)\.jsonl", f)
        if m and int(m.group(1)) >= k and (best is None or int(m.group(1)) < best[0]):
            best = (int(m.group(1)), os.path.join(folder, f))
    return best


@torch.no_grad()
def sample_source(model, tokenizer, k):
    """Per question (this rank's share): {"i", "sampled", "reasons", "paths": correct paths}."""
    engine = Engine(model, tokenizer)
    model.eval()
    out = []
    for i in range(ci.rank, len(questions), ci.world_size):
        conv = questions[i]
        prompt = tokenizer.render_for_completion(conv)
        rows, _ = engine.generate_batch(prompt, num_samples=k, max_tokens=args.max_new_tokens,
                                        temperature=args.temperature, top_k=args.top_k or None,
                                        seed=args.sample_seed + i, use_tools=args.use_tools, include_stop=True)
        record = dict(i=i, sampled=k, reasons={}, paths=[])
        for j, row in enumerate(rows):
            turn = TurnDecoder(tokenizer)
            for token in row[len(prompt):]:
                turn.push(token)
            turn.finish()
            ok, why = check_path(turn.parts, conv["answer"]) if turn.stopped else (False, "unfinished")
            record["reasons"][why] = record["reasons"].get(why, 0) + 1
            if ok:
                text = tokenizer.decode(row[len(prompt):-1])  # the stop token is not part of the path
                record["paths"].append(dict(j=j, text=text, parts=turn.parts))
        out.append(record)
    return out


def gather_records(records, folder):
    """All ranks' records (a no-op on one process): each rank writes its file, then every rank reads all."""
    if not ci.ddp:
        return records
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"rank{ci.rank}.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    dist.barrier()
    everything = []
    for r in range(ci.world_size):
        with open(os.path.join(folder, f"rank{r}.jsonl")) as f:
            everything.extend(json.loads(line) for line in f)
    dist.barrier()
    return everything


def paths_of_source(spec):
    """{question index: record} of one source, sampled now or read from the cache (first k samples)."""
    stage, tag, step = parse_source(spec)
    model, tokenizer, meta = load_model(stage, ci.device, tag=tag, step=step)
    tag, step = meta["tag"], meta["step"]
    cached = find_cached(stage, tag, step, args.num_samples)
    if cached is not None:
        print0(f"{spec}: reusing {cached[1]} (first {args.num_samples} of {cached[0]} samples per question)")
        with open(cached[1]) as f:
            records = [json.loads(line) for line in f]
        for r in records:  # take the first k: the samples of a question are i.i.d.
            r["paths"] = [p for p in r["paths"] if p["j"] < args.num_samples]
            r["sampled"] = args.num_samples
            r["reasons"] = None  # only known for the full k
    else:
        t0 = time.time()
        records = sample_source(model, tokenizer, args.num_samples)
        target = cache_path(stage, tag, step, args.num_samples)
        records = sorted(gather_records(records, target + ".parts"), key=lambda r: r["i"])
        if ci.rank == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target + ".tmp", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
            os.replace(target + ".tmp", target)  # a cache file is complete or absent
        print0(f"{spec}: sampled {args.num_samples} x {len(questions):,} paths in {time.time() - t0:.0f}s -> {target}")
    del model
    return {r["i"]: r for r in records}, tokenizer, f"{stage}:{tag}:{step}"


# -----------------------------------------------------------------------------
# sample every source, pool, select

t0 = time.time()
by_source, source_stats, tokenizer = {}, {}, None
for spec in [s.strip() for s in args.sources.split(",") if s.strip()]:
    try:
        records, tokenizer, name = paths_of_source(spec)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise SystemExit(f"error: source {spec!r}: {e}")
    by_source[name] = records
    correct = [len(r["paths"]) for r in records.values()]
    distinct = [distinct_equation_lists([{"text": p["text"]} for p in r["paths"]]) for r in records.values()]
    source_stats[name] = {
        "questions with a correct path": sum(c > 0 for c in correct) / len(questions),
        "correct paths per question": sum(correct) / len(questions),
        "distinct equation lists per question": sum(distinct) / len(questions),
    }
    print0(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in source_stats[name].items()))

kept_conversations, distinct_total = [], 0
for i, conv in enumerate(questions):
    pooled = pool_paths({name: recs[i]["paths"] for name, recs in by_source.items() if i in recs})
    for p in pooled:
        p["key"] = equation_key(p["text"])
    kept = select_paths(pooled)
    distinct_total += len(kept)
    user = [m for m in conv["messages"] if m["role"] != "assistant"]
    for p in kept:
        kept_conversations.append({"messages": user + [{"role": "assistant", "content": p["parts"]}],
                                   "answer": conv["answer"], "rft_source": p["source"]})
union_stats = {"sources": list(by_source), "k per source": args.num_samples, "questions": len(questions),
               "paths kept": len(kept_conversations), "kept per question": distinct_total / len(questions),
               "sampling + selection time (s)": time.time() - t0}
print0(f"kept {len(kept_conversations):,} paths ({distinct_total / len(questions):.2f} per question) from "
       f"{len(by_source)} source(s)")
output_tag = args.output_tag or f"k{args.num_samples}"
out_dir = os.path.join(get_base_dir(), "rft", output_tag)
if ci.rank == 0:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "paths.jsonl"), "w") as f:
        f.writelines(json.dumps(c) + "\n" for c in kept_conversations)
    print0(f"kept paths: {os.path.join(out_dir, 'paths.jsonl')}")
if args.sample_only:
    get_report().log("Chat RFT (paths only)", [vars(args), union_stats, source_stats], column="rft")
    compute_cleanup()
    raise SystemExit(0)
if not kept_conversations:
    raise SystemExit("error: no path was kept (no source answered any question correctly); sample more "
                     "(--num-samples), from a better checkpoint, or with --use-tools")

# -----------------------------------------------------------------------------
# retrain from the base/mid checkpoint on SFT data + kept paths, with the shared SFT loop

model, tokenizer, input_meta = load_input_model(args, ci.device)
rft_task = ConversationList(kept_conversations, name="rft-paths")
try:
    val_task, val_desc = load_stage_data("sft", "val", args.data, args.val_mix)
    if args.no_sft_data:
        train_task, train_desc = rft_task, f"rft paths {len(rft_task):,}"
    else:
        sft_task, sft_desc = load_stage_data("sft", "train", args.data, args.mix, seed=args.data_seed)
        train_task = TaskMixture([sft_task, rft_task], seed=args.seed)
        train_desc = f"{sft_desc} + rft paths {len(rft_task):,}"
except (ValueError, RuntimeError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}")
cfg = config_from_args(args, "rft", packed=False, rows_per_step=args.examples_per_step, model_tag=output_tag,
                       max_seq_len=args.max_seq_len or model.config.sequence_len)
info = dict(source=dict(stage=args.source, tag=input_meta["tag"], step=input_meta["step"]),
            data=dict(train=train_desc, val=val_desc), rft=union_stats)
try:
    summary = train_chat(model, tokenizer, train_task, val_task, cfg, ci, meta_extra=info)
except (ValueError, FileNotFoundError) as e:
    compute_cleanup()
    raise SystemExit(f"error: {e}")
get_report().log("Chat RFT", [vars(args), info["source"], union_stats, source_stats, {
    "train data": train_desc, "steps": summary["steps"], "tokens": summary["tokens"], "val loss": summary["val_loss"],
    "training time (min)": summary["train_time"] / 60, **{f"eval {k}": v for k, v in summary["evals"].items()},
    "checkpoint": summary["checkpoint"]}], column="rft")
print0(f"checkpoint: {summary['checkpoint']}")
compute_cleanup()
