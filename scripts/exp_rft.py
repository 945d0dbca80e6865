"""
The RFT experiment on SynthMath (arXiv 2308.01825 at our scale): per seed, SFT from a base checkpoint, then RFT
with k sampled paths per question for each k in --ks, and (optionally) the union of the paths of several SFT
models; every model is evaluated greedily, calculator on, on the same held-out problems, and compared with its
SFT model item by item (paired difference). Each training is a subprocess of scripts.chat_sft / scripts.chat_rft
(finished checkpoints are reused, so a cut-off experiment continues where it stopped).

    python -m scripts.exp_rft --seeds 0,1,2 --ks 4,16,64 --union               # CPU, about an hour when quiet
    python -m scripts.exp_rft --seeds 0 --ks 16 --questions synthmath12:100    # a quick look

Starts every seed from base checkpoints tagged s<seed> (e.g. `python -m scripts.base_train --data synthetic
--depth 2 --num-iterations 1 --seed 0 --model-tag s0`), or all seeds from one checkpoint with --start (the
speedrun's `--start mid:d2`: the seeds then differ in SFT data order and sampling). Outputs:
<base_dir>/rft/experiment.json (every number) and the "RFT experiment" report section (mean +- std over seeds).
With the calculator OFF (the paper's setting) the SFT data must teach the model to write its own results:
`--mix synthmath-notool:6000 --questions synthmath-notool:100` (annotations stay in the text).
"""
import os
import sys
import json
import argparse
import statistics

import torch

from nanochat.common import get_base_dir, print0, run_stage
from nanochat.checkpoint import checkpoint_dir, find_latest_step, load_model
from nanochat.task_eval import evaluate_task, paired_difference
from nanochat.report import get_report

parser = argparse.ArgumentParser(description="RFT vs SFT on SynthMath, several seeds, paired held-out pass@1.")
parser.add_argument("--seeds", type=str, default="0,1,2", help="comma-separated seeds (base checkpoints s<seed> unless --start)")
parser.add_argument("--start", type=str, default=None, help="'stage:tag' every seed's SFT and RFT start from (e.g. mid:d2 of the speedrun; default base:s<seed>)")
parser.add_argument("--ks", type=str, default="4,16,64", help="comma-separated k: sampled paths per question")
parser.add_argument("--union", action="store_true", help="also RFT on the union of every seed's SFT model paths (k = max of --ks each)")
parser.add_argument("--mix", type=str, default="synthmath12:8000", help="the SFT data (also the original data of RFT)")
parser.add_argument("--questions", type=str, default="synthmath12:500", help="questions RFT samples on (the first items of the SFT data)")
parser.add_argument("--eval-problems", type=int, default=300, help="held-out problems (fresh train-distribution items, seed 1000)")
parser.add_argument("--eval-seed", type=int, default=1000, help="SynthMath seed of the held-out problems (SFT uses 0)")
parser.add_argument("--control", action="store_true", help="also SFT again on the same data in another order (one more item reshuffles the mixture): how much a retraining moves pass@1 without any RFT path")
parser.add_argument("--results", type=str, default=None, help="JSON file of the evaluations (default: <base_dir>/rft/experiment.json); one per concurrent run")
parser.add_argument("--rft-flags", type=str, default="", help="extra flags for every chat_rft run (e.g. --use-tools)")
parser.add_argument("--train-flags", type=str, default="--init-lr-frac 1.0 --examples-per-step 32 --eval-every -1 --eval-tasks '' --data offline",
                    help="flags passed to every chat_sft / chat_rft training")
args = parser.parse_args()

seeds = [int(s) for s in args.seeds.split(",")]
if args.start is not None and args.start.count(":") != 1:
    parser.error(f"--start {args.start!r}: use stage:tag, e.g. mid:d2")


def start(seed):
    """--source/--model-tag flags of the checkpoint seed `seed` starts from."""
    stage, tag = args.start.split(":") if args.start else ("base", f"s{seed}")
    return f"--source {stage} --model-tag {tag}"


def seeds_of(seed):
    """A seed sets the RNGs, which SFT items are drawn and in what order (and, for RFT, the sampler)."""
    return f"--seed {seed} --data-seed {seed}"

ks = sorted((int(k) for k in args.ks.split(",")), reverse=True)  # the largest first: smaller k reuse its samples
results_path = args.results or os.path.join(get_base_dir(), "rft", "experiment.json")
results = json.load(open(results_path)) if os.path.exists(results_path) else {}

# -----------------------------------------------------------------------------
# training (subprocesses) and evaluation (here)


def run(module, flags, mix=None):
    cmd = f"{sys.executable} -m {module} {flags} {args.train_flags} --mix {mix or args.mix}"
    run_stage(cmd)


def trained(stage, tag):
    return find_latest_step(checkpoint_dir(stage, tag)) is not None


def held_out():
    from tasks.synthmath import SynthMath
    lo, hi = (1, 2) if args.mix.startswith("synthmath12") else (1, 4)
    return SynthMath("train", size=args.eval_problems, seed=args.eval_seed, min_steps=lo, max_steps=hi)


def evaluate(stage, tag):
    key = f"{stage}/{tag}"
    if key not in results:
        model, tokenizer, _ = load_model(stage, "cpu" if not torch.cuda.is_available() else "cuda", tag=tag)
        res = evaluate_task(model, tokenizer, held_out(), name="synthmath-fresh", max_new_tokens=128)
        results[key] = dict(accuracy=res["accuracy"], stderr=res["stderr"], items=res["items"])
        os.makedirs(os.path.dirname(results_path), exist_ok=True)
        json.dump(results, open(results_path, "w"))
    print0(f"{key}: held-out pass@1 {results[key]['accuracy']:.4f} +- {results[key]['stderr']:.4f}")
    return results[key]


def rft_stats(tag):
    meta_dir = checkpoint_dir("rft", tag)
    step = find_latest_step(meta_dir)
    meta = json.load(open(os.path.join(meta_dir, f"step_{step:06d}", "meta.json")))
    return meta["rft"]


# -----------------------------------------------------------------------------
# the runs

rows = {}  # variant -> list over seeds of (acc, diff vs SFT, kept per question)
for seed in seeds:
    sft_tag = f"sft{seed}"
    if not trained("sft", sft_tag):
        run("scripts.chat_sft", f"{start(seed)} --output-tag {sft_tag} {seeds_of(seed)}")
    sft = evaluate("sft", sft_tag)
    rows.setdefault("SFT", []).append((sft["accuracy"], 0.0, 0.0, 0.0))
    variants = [(f"RFT k={k}", f"rft_k{k}_s{seed}", f"sft:{sft_tag}", k) for k in ks]
    if args.union:  # needs every seed's SFT model: train the missing ones first
        for s in seeds:
            if not trained("sft", f"sft{s}"):
                run("scripts.chat_sft", f"{start(s)} --output-tag sft{s} {seeds_of(s)}")
        variants.append(("RFT union", f"rft_union_s{seed}", ",".join(f"sft:sft{s}" for s in seeds), ks[0]))
    if args.control:
        ctl_tag = f"sftctl{seed}"
        name, count = args.mix.split(":")
        if not trained("sft", ctl_tag):
            cmd = f"{start(seed)} --output-tag {ctl_tag} {seeds_of(seed)}"
            run("scripts.chat_sft", cmd, mix=f"{name}:{int(count) + 1}")
        res = evaluate("sft", ctl_tag)
        diff, se = paired_difference(sft["items"], res["items"])
        rows.setdefault("SFT reshuffled", []).append((res["accuracy"], diff, 0.0, se))
        print0(f"  SFT reshuffled seed {seed}: {res['accuracy']:.4f}, minus SFT {diff:+.4f} +- {se:.4f}")
    for name, tag, sources, k in variants:
        if not trained("rft", tag):
            run("scripts.chat_rft", f"--sources {sources} --num-samples {k} --questions {args.questions} "
                                    f"{start(seed)} --output-tag {tag} {seeds_of(seed)} --sample-seed {seed} {args.rft_flags}")
        res = evaluate("rft", tag)
        diff, se = paired_difference(sft["items"], res["items"])
        stats = rft_stats(tag)
        rows.setdefault(name, []).append((res["accuracy"], diff, stats["kept per question"], se))
        print0(f"  {name} seed {seed}: {res['accuracy']:.4f}, minus SFT {diff:+.4f} +- {se:.4f}, "
               f"{stats['kept per question']:.2f} distinct paths kept per question")

# -----------------------------------------------------------------------------
# summary: mean +- std over seeds


def mean_std(xs):
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else float("nan"))


summary = {}
for name, vals in rows.items():
    acc, diff, kept = (mean_std([v[i] for v in vals]) for i in range(3))
    summary[name] = {"seeds": len(vals), "held-out pass@1": f"{acc[0]:.4f} +- {acc[1]:.4f}",
                     "minus SFT": f"{diff[0]:+.4f} +- {diff[1]:.4f}", "distinct paths kept / question": f"{kept[0]:.2f}"}
    print0(f"{name:12s} n={len(vals)}  pass@1 {acc[0]:.4f} +- {acc[1]:.4f}  minus SFT {diff[0]:+.4f} +- {diff[1]:.4f}"
           f"  kept/question {kept[0]:.2f}")
get_report().log("RFT experiment", [vars(args), summary], column="rft")
