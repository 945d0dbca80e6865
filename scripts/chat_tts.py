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
the budget asked), Scaling (mean pairwise slope of accuracy over thinking tokens, reported per 100 tokens) and
Performance (best accuracy) of the max-budget sweep; and an SVG plot of accuracy vs thinking tokens per problem.

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

from nanochat.common import compute_init, compute_cleanup, get_base_dir, print0
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
parser.add_argument("--eval-split", choices=["fresh", "test"], default="fresh", help="'fresh': unseen problems of the training distribution (seed --task-seed); 'test': SynthMath's held-out templates and number ranges")
parser.add_argument("--task-seed", type=int, default=1000, help="seed of the 'fresh' problems (training data uses small seeds)")
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
parser.add_argument("--seed", type=int, default=0, help="sampling seed (problem i uses seed + i)")
parser.add_argument("--device-type", type=str, default="", help="cuda|cpu|mps (default: autodetect)")
args = parser.parse_args()
if args.num_problems < 1 or args.num_samples < 0:
    raise SystemExit("error: --num-problems must be >= 1 and --num-samples >= 0")

ci = compute_init(args.device_type)
if ci.ddp:
    raise SystemExit("error: chat_tts runs in one process; launch it with python -m, not torchrun")

# -----------------------------------------------------------------------------
# model and held-out problems

from nanochat.checkpoint import load_model  # noqa: E402
from tasks.synthmath import SynthMath  # noqa: E402

try:
    model, tokenizer, meta = load_model(args.source, ci.device, tag=args.model_tag, step=args.step)
except (FileNotFoundError, ValueError, RuntimeError) as e:
    raise SystemExit(f"error: {e}")
model.eval()
tag = meta["tag"]
split, seed = ("train", args.task_seed) if args.eval_split == "fresh" else ("test", 0)
task = SynthMath(split, size=args.num_problems, seed=seed, min_steps=args.min_steps, max_steps=args.max_steps,
                 max_number=args.max_number, think=True)
indices = range(args.num_problems)
engine = Engine(model, tokenizer)
print0(f"model {args.source}/{tag} step {meta['step']} ({model.num_params():,} params) on {ci.device}; "
       f"{args.num_problems} SynthMath-think {args.eval_split} problems, {args.min_steps}-{args.max_steps} steps, "
       f"numbers <= {args.max_number if args.eval_split == 'fresh' else 2 * args.max_number}")
common = dict(max_new_tokens=args.max_new_tokens, seed=args.seed)
budget_kwargs = dict(answer_prefix=args.answer_prefix or None, wait_text=args.wait_text, max_waits=args.max_waits)
t0 = time.time()
results = dict(args=vars(args), model=f"{args.source}/{tag}/{meta['step']}", max_think=[], min_think=[], parallel=[])


def show(kind, budget, point):
    print0(f"  {kind:<10} budget {str(budget):>5}: accuracy {point['accuracy']:.4f}  thinking tokens "
           f"{point['think_tokens']:6.1f}  control {point['control']:.3f}  ({time.time() - t0:.0f}s)")


# -----------------------------------------------------------------------------
# 1) max budgets (greedy)

print0(f"max-think sweep: {args.max_think}")
for budget in args.max_think:
    recs = run_problems(engine, tokenizer, task, indices, max_think_tokens=budget, **common, **budget_kwargs)
    point = sweep_point(recs, max_tokens=budget)
    show("max-think", budget, point)
    results["max_think"].append(dict(budget=budget, **point, records=recs))

# -----------------------------------------------------------------------------
# 2) min budgets with "Wait" (greedy)

if args.min_think:
    print0(f"min-think sweep: {args.min_think} (at most {args.max_waits} x {args.wait_text!r})")
for budget in args.min_think:
    recs = run_problems(engine, tokenizer, task, indices, min_think_tokens=budget, **common, **budget_kwargs)
    point = sweep_point(recs, min_tokens=budget)
    show("min-think", budget, point)
    results["min_think"].append(dict(budget=budget, **point, records=recs))

# -----------------------------------------------------------------------------
# 3) parallel: majority vote over N samples (no budget)

if args.num_samples:
    print0(f"parallel: {args.num_samples} samples at T={args.temperature}, top-k {args.top_k}, majority vote")
    recs = run_problems(engine, tokenizer, task, indices, num_samples=args.num_samples, temperature=args.temperature,
                        top_k=args.top_k, **common)
    sample = sweep_point(recs)
    n = 1
    while n <= args.num_samples:
        acc = majority_at(recs, n)
        # compute spent: n samples' thinking per problem
        results["parallel"].append(dict(n=n, accuracy=acc, think_tokens=n * sample["think_tokens"]))
        print0(f"  majority@{n:<3} accuracy {acc:.4f}  thinking tokens per problem {n * sample['think_tokens']:6.1f}")
        n *= 2
    results["parallel_records"] = recs
    results["parallel_pass1"] = sample["accuracy"]

# -----------------------------------------------------------------------------
# s1's metrics, plot, outputs

points = [(p["think_tokens"], p["accuracy"]) for p in results["max_think"]]
slope = scaling(points)
metrics = {
    "control": sum(p["control"] for p in results["max_think"]) / len(points) if points else None,
    "scaling_per_100_tokens": None if slope is None else 100 * slope,
    "performance": performance(points) if points else None,
}
if results["parallel"]:
    metrics["majority_best"] = max(p["accuracy"] for p in results["parallel"])
results["metrics"] = metrics
print0("s1 metrics of the max-think sweep: " + ", ".join(
    f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))

out_dir = os.path.join(get_base_dir(), "tts", tag)
os.makedirs(out_dir, exist_ok=True)
with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
series = {"budget forcing (max)": sorted(points)}
if results["min_think"]:
    series["min + Wait"] = sorted((p["think_tokens"], p["accuracy"]) for p in results["min_think"])
if results["parallel"]:
    series["majority vote"] = [(p["think_tokens"], p["accuracy"]) for p in results["parallel"]]
svg = svg_line_plot(series, f"test-time scaling, {args.source}/{tag}", "thinking tokens per problem", "accuracy")
report = get_report()
plot_dir = getattr(report, "dir", out_dir)
svg_path = os.path.join(out_dir, "tts.svg")
for path in {svg_path, os.path.join(plot_dir, f"tts_{tag}.svg")}:
    with open(path, "w") as f:
        f.write(svg)
table = ["| sweep | budget / N | accuracy | thinking tokens | control |", "|---|---|---|---|---|"]
table += [f"| max-think | {p['budget']} | {p['accuracy']:.4f} | {p['think_tokens']:.1f} | {p['control']:.3f} |" for p in results["max_think"]]
table += [f"| min-think | {p['budget']} | {p['accuracy']:.4f} | {p['think_tokens']:.1f} | {p['control']:.3f} |" for p in results["min_think"]]
table += [f"| majority | {p['n']} | {p['accuracy']:.4f} | {p['think_tokens']:.1f} | |" for p in results["parallel"]]
report.log(f"Test-time scaling {tag}", [vars(args), metrics, "\n".join(table), f"![test-time scaling](tts_{tag}.svg)"],
           summary={f"tts {k}": v for k, v in metrics.items() if v is not None}, column=args.source)
print0(f"done in {time.time() - t0:.0f}s: {out_dir}/results.json, {svg_path}")
compute_cleanup()
