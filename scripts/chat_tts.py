"""
Test-time scaling of a thinking model (s1, arXiv 2501.19393): how accuracy moves with the compute spent at
inference, measured three ways on held-out SynthMath problems (the think=True variant's prompts):

1. sequential, max budget: thinking capped at B tokens (the engine forces <|think_end|>, then the model
   answers), for each B of --max-think; greedy decoding, so each point is one deterministic run.
2. sequential, min budget: an early <|think_end|> is replaced by --wait-text ("Wait") up to --max-waits times
   until B thinking tokens, for each B of --min-think.
3. parallel: N samples at --temperature, majority vote (arXiv 2203.11171), for N = 1, 2, 4, ... --num-samples
   (one run of N samples; smaller N are its first samples).

Printed and reported: per point the accuracy and mean thinking tokens; s1's Control (fraction of runs within
the budget asked), Scaling (mean pairwise slope of accuracy over thinking tokens, in accuracy points (%) per
token) and Performance (best accuracy) of the max-budget sweep; and an SVG plot of accuracy vs thinking tokens
per problem. Everything runs once per problem set of --task-seeds (independently drawn held-out sets, each with
its own sampling seed) and is reported as mean +- std over the sets.

A thinking model first (SFT on the think=True data; inputs <= 10 so a tiny CPU model can do the arithmetic):
    python -m scripts.chat_sft --source mid --mix synthmath-think-small:8000 --val-mix synthmath-think-small:100 --output-tag think10
Then:
    python -m scripts.chat_tts --source sft --model-tag think10               # CPU, defaults below
    python -m scripts.chat_tts --max-think 0,4,8,16,none --min-think 40 --num-samples 8 --num-problems 200
    python -m scripts.chat_tts --device-type cuda --num-problems 500          # one GPU (single process)

Outputs: <base_dir>/tts/<tag>/results.json (every point, every problem) and tts.svg, report section
"Test-time scaling <tag>".
"""
import os
import json
import time
import argparse
import statistics

from nanochat.common import compute_init, compute_cleanup, get_base_dir, print0, require_nonnegative, require_positive
from tasks import synthmath
from nanochat.engine import Engine
from nanochat.report import get_report, svg_line_plot
from nanochat.tts import majority_at, performance, run_problems, scaling, sweep_point

# -----------------------------------------------------------------------------
# arguments


def budget_list(text):
    """'0,8,none' -> [0, 8, None]: None is no cap. A clear error for anything else."""
    out = []
    for item in (s.strip().lower() for s in text.split(",") if s.strip()):
        if item == "none":
            out.append(None)
        elif item.isdigit():
            out.append(int(item))
        else:
            raise argparse.ArgumentTypeError(f"bad budget {item!r}: use non-negative integers or 'none', e.g. 0,8,16,none")
    return out


parser = argparse.ArgumentParser(description="Test-time scaling sweeps (s1 budget forcing, majority vote) of a thinking model.")
parser.add_argument("--source", type=str, default="sft", help="stage of the checkpoint (sft, rl, ...)")
parser.add_argument("--model-tag", type=str, default=None, help="tag of the checkpoint (default: the newest tag of --source)")
parser.add_argument("--step", type=int, default=None, help="step of the checkpoint (default: its latest complete step)")
parser.add_argument("--num-problems", type=int, default=200, help="held-out problems per point")
parser.add_argument("--eval-split", choices=["fresh", "test"], default="fresh", help="'fresh': unseen problems of the training distribution; 'test': SynthMath's held-out templates and number ranges")
parser.add_argument("--task-seeds", type=str, default="1000,1001,1002", help="one problem set per seed (SynthMath seed; training data uses small seeds); results are mean +- std over them")
parser.add_argument("--min-steps", type=int, default=1, help="fewest calculation steps per problem")
parser.add_argument("--max-steps", type=int, default=4, help="most calculation steps per problem")
parser.add_argument("--max-number", type=int, default=10, help="largest input number (10: the synthmath-think-small SFT data; 50: synthmath-think)")
parser.add_argument("--max-think", type=budget_list, default=budget_list("0,4,8,16,32,none"), help="max thinking budgets to sweep, comma-separated ('none': uncapped)")
parser.add_argument("--min-think", type=budget_list, default=budget_list("48"), help="min thinking budgets to sweep with 'Wait' ('' to skip)")
parser.add_argument("--max-waits", type=int, default=2, help="at most this many 'Wait's per sample in the min-budget sweep")
parser.add_argument("--wait-text", type=str, default="Wait", help="text forced in place of an early end of thinking")
parser.add_argument("--answer-prefix", type=str, default="", help="text forced after a capped thinking span (s1 used 'Final Answer:'; '' lets the model answer in its own words)")
parser.add_argument("--num-samples", type=int, default=8, help="samples per problem for majority voting (0: skip the parallel sweep)")
parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the parallel sweep")
parser.add_argument("--top-k", type=int, default=50, help="top-k of the parallel sweep")
parser.add_argument("--max-new-tokens", type=int, default=192, help="longest completion (thinking and answer)")
parser.add_argument("--seed", type=int, default=0, help="sampling seed of the first problem set (set k, problem i: seed + k + i)")
parser.add_argument("--device-type", type=str, default="", help="cuda|cpu|mps (default: autodetect)")
args = parser.parse_args()
require_positive(parser, args, ["num_problems", "max_new_tokens"])
require_nonnegative(parser, args, ["temperature", "top_k", "max_waits"])
if (error := synthmath.args_error(args.min_steps, args.max_steps, args.max_number)):
    parser.error(error)
if args.num_samples < 0:
    parser.error("--num-samples must be >= 0 (0 skips the majority vote)")
try:
    task_seeds = [int(x) for x in args.task_seeds.split(",") if x.strip()]
except ValueError:
    raise SystemExit(f"error: --task-seeds {args.task_seeds!r}: give comma-separated integers, e.g. 1000,1001,1002")

ci = compute_init(args.device_type)
if ci.ddp:
    raise SystemExit("error: chat_tts runs in one process; launch it with python -m, not torchrun")

# -----------------------------------------------------------------------------
# model

from nanochat.checkpoint import load_model  # noqa: E402
from tasks.synthmath import SynthMath  # noqa: E402

try:
    model, tokenizer, meta = load_model(args.source, ci.device, tag=args.model_tag, step=args.step)
except (FileNotFoundError, ValueError, RuntimeError) as e:
    raise SystemExit(f"error: {e}")
model.eval()
tag = meta["tag"]
engine = Engine(model, tokenizer)
split = "train" if args.eval_split == "fresh" else "test"
print0(f"model {args.source}/{tag} step {meta['step']} ({model.num_params():,} params) on {ci.device}; "
       f"{len(task_seeds)} x {args.num_problems} SynthMath-think {args.eval_split} problems, {args.min_steps}-"
       f"{args.max_steps} steps, numbers <= {args.max_number if split == 'train' else 2 * args.max_number}")
budget_kwargs = dict(answer_prefix=args.answer_prefix or None, wait_text=args.wait_text, max_waits=args.max_waits)
t0 = time.time()


def show(kind, budget, point):
    print0(f"  {kind:<10} budget {str(budget):>5}: accuracy {point['accuracy']:.4f}  thinking tokens "
           f"{point['think_tokens']:6.1f}  control {point['control']:.3f}  ({time.time() - t0:.0f}s)")


# -----------------------------------------------------------------------------
# the three sweeps on one problem set


def run_sweeps(task, seed):
    indices = range(len(task))
    common = dict(max_new_tokens=args.max_new_tokens, seed=seed)
    res = dict(max_think=[], min_think=[], parallel=[])
    # 1) max budgets (greedy): thinking capped, then the model answers
    for budget in args.max_think:
        recs = run_problems(engine, tokenizer, task, indices, max_think_tokens=budget, **common, **budget_kwargs)
        point = sweep_point(recs, max_tokens=budget)
        show("max-think", budget, point)
        res["max_think"].append(dict(budget=budget, **point, records=recs))
    # 2) min budgets (greedy): an early end of thinking becomes "Wait", at most max_waits times
    for budget in args.min_think:
        recs = run_problems(engine, tokenizer, task, indices, min_think_tokens=budget, **common, **budget_kwargs)
        point = sweep_point(recs, min_tokens=budget)
        show("min-think", budget, point)
        res["min_think"].append(dict(budget=budget, **point, records=recs))
    # 3) parallel: N samples, majority vote; smaller N are the first samples of the same run
    if args.num_samples:
        recs = run_problems(engine, tokenizer, task, indices, num_samples=args.num_samples,
                            temperature=args.temperature, top_k=args.top_k, **common)
        per_sample = sweep_point(recs)["think_tokens"]
        n = 1
        while n <= args.num_samples:  # compute spent per problem: n samples' thinking
            res["parallel"].append(dict(budget=n, accuracy=majority_at(recs, n), think_tokens=n * per_sample))
            print0(f"  majority@{n:<3} accuracy {res['parallel'][-1]['accuracy']:.4f}  thinking tokens per problem "
                   f"{n * per_sample:6.1f}")
            n *= 2
        res["parallel_records"] = recs
    # s1's metrics of the max-budget sweep
    points = [(p["think_tokens"], p["accuracy"]) for p in res["max_think"]]
    slope = scaling(points)
    res["metrics"] = {
        "control": sum(p["control"] for p in res["max_think"]) / len(points) if points else None,
        "scaling_points_per_token": None if slope is None else 100 * slope,  # accuracy in %, per thinking token
        "performance": performance(points) if points else None,
        "min_think_control": (sum(p["control"] for p in res["min_think"]) / len(res["min_think"])
                              if res["min_think"] else None),
        "majority_best": max(p["accuracy"] for p in res["parallel"]) if res["parallel"] else None,
    }
    print0("  s1 metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in res["metrics"].items() if v is not None))
    return res


runs = []
for k, task_seed in enumerate(task_seeds):
    print0(f"problem set {k + 1}/{len(task_seeds)} (seed {task_seed}): max-think {args.max_think}, min-think "
           f"{args.min_think} (<= {args.max_waits} x {args.wait_text!r}), majority over {args.num_samples}")
    task = SynthMath(split, size=args.num_problems, seed=task_seed, min_steps=args.min_steps,
                     max_steps=args.max_steps, max_number=args.max_number, think=True)
    runs.append(dict(task_seed=task_seed, **run_sweeps(task, args.seed + k)))

# -----------------------------------------------------------------------------
# mean +- std over the problem sets, plot, outputs


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)  # no spread from one set


def pm(mean, std):
    return f"{mean:.4f}" if std is None else f"{mean:.4f} +- {std:.4f}"


def aggregate(kind):
    """Per budget: mean and std over the problem sets of accuracy, thinking tokens and control."""
    out = []
    for i, first in enumerate(runs[0][kind]):
        pts = [r[kind][i] for r in runs]
        row = dict(budget=first["budget"])
        for key in ("accuracy", "think_tokens", "control"):
            row[key], row[key + "_std"] = mean_std([p.get(key) for p in pts])
        out.append(row)
    return out


summary = {kind: aggregate(kind) for kind in ("max_think", "min_think", "parallel")}
metrics = {}
for key in runs[0]["metrics"]:
    m, s = mean_std([r["metrics"][key] for r in runs])
    if m is not None:
        metrics[key], metrics[key + "_std"] = m, s
print0(f"over {len(runs)} problem sets: " + ", ".join(
    f"{k} {pm(metrics[k], metrics[k + '_std'])}" for k in metrics if not k.endswith("_std")))

out_dir = os.path.join(get_base_dir(), "tts", tag)
os.makedirs(out_dir, exist_ok=True)
with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(dict(args=vars(args), model=f"{args.source}/{tag}/{meta['step']}", metrics=metrics, summary=summary,
                   runs=runs), f, indent=1)
names = {"max_think": "budget forcing (max)", "min_think": "min + Wait", "parallel": "majority vote"}
series = {names[k]: sorted((p["think_tokens"], p["accuracy"]) for p in v) for k, v in summary.items() if v}
svg = svg_line_plot(series, f"test-time scaling, {args.source}/{tag}", "thinking tokens per problem", "accuracy")
report = get_report()
svg_path = os.path.join(out_dir, "tts.svg")
for path in {svg_path, os.path.join(getattr(report, "dir", out_dir), f"tts_{tag}.svg")}:
    with open(path, "w") as f:
        f.write(svg)
table = ["| sweep | budget (N for majority) | accuracy | thinking tokens | control |", "|---|---|---|---|---|"]
for kind in ("max_think", "min_think", "parallel"):
    for p in summary[kind]:
        control = "" if p["control"] is None else f"{p['control']:.3f}"
        table.append(f"| {kind} | {p['budget']} | {pm(p['accuracy'], p['accuracy_std'])} | "
                     f"{p['think_tokens']:.1f} | {control} |")
print0("\n".join(table))
report.log(f"Test-time scaling {tag}", [vars(args), metrics, "\n".join(table), f"![test-time scaling](tts_{tag}.svg)"],
           summary={f"tts {k}": v for k, v in metrics.items() if not k.endswith("_std")}, column=args.source)
print0(f"done in {time.time() - t0:.0f}s: {out_dir}/results.json, {svg_path}")
compute_cleanup()
