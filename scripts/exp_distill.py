"""
Experiment: on-policy distillation vs GRPO vs SFT on teacher samples, at equal student samples, several seeds.

Runs scripts.chat_distill three ways from the same student, the same prompts and the same number of samples
per step (P prompts x G samples):
    distill   --mode onpolicy                                     the teacher grades every student token
    grpo      --mode onpolicy --teacher-coef 0 --reward-coef 1 --advantage grpo   task reward only
    sft       --mode offpolicy                                    the student imitates teacher samples
and prints held-out greedy pass@1 vs step (mean +- std over seeds) and the paired end-minus-start difference.
Every other chat_distill flag can be passed after `--`.

    python -m scripts.exp_distill --source sft --model-tag student --teacher-source rl --teacher-tag pilot_rl
    python -m scripts.exp_distill --seeds 1 -- --num-steps 10 --eval-problems 50   # a quick look

Results: <base_dir>/runs/<name>/summary.json, the table on stdout and the "Distillation experiment" report section
(docs/distill.md has the 2026-11-21 runs).
"""
import os
import sys
import json
import argparse
import statistics

from nanochat.common import get_base_dir, run_stage

METHODS = {
    "distill": ["--mode", "onpolicy"],
    "grpo": ["--mode", "onpolicy", "--teacher-coef", "0", "--reward-coef", "1", "--advantage", "grpo"],
    "sft": ["--mode", "offpolicy"],
}

parser = argparse.ArgumentParser(description="On-policy distillation vs GRPO vs SFT on teacher samples (runs scripts.chat_distill).")
parser.add_argument("--source", type=str, default="sft", help="stage of the student checkpoint")
parser.add_argument("--model-tag", type=str, default=None, help="tag of the student checkpoint")
parser.add_argument("--teacher-source", type=str, default="rl", help="stage of the teacher checkpoint")
parser.add_argument("--teacher-tag", type=str, default=None, help="tag of the teacher checkpoint")
parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), help="methods to compare")
parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seeds (rollouts, RNGs)")
parser.add_argument("--name", type=str, default="exp_distill", help="run name prefix (and the summary's directory)")
args, extra = parser.parse_known_args()
extra = [a for a in extra if a != "--"]
out_dir = os.path.join(get_base_dir(), "runs", args.name)
os.makedirs(out_dir, exist_ok=True)
common = ["--source", args.source, "--teacher-source", args.teacher_source] + extra
common += ["--model-tag", args.model_tag] if args.model_tag else []
common += ["--teacher-tag", args.teacher_tag] if args.teacher_tag else []

# -----------------------------------------------------------------------------
# runs

results = {m: [] for m in args.methods}
for seed in args.seeds:
    for method in args.methods:
        run = f"{args.name}_{method}_s{seed}"
        cmd = [sys.executable, "-m", "scripts.chat_distill", *common, *METHODS[method], "--seed", str(seed),
               "--run", run, "--output-tag", run]
        run_stage(cmd)
        with open(os.path.join(get_base_dir(), "runs", run, "result.json")) as f:
            results[method].append(json.load(f))

# -----------------------------------------------------------------------------
# table: pass@1 vs step, mean +- std over seeds


def ms(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


steps = [s for s, _ in results[args.methods[0]][0]["curve"]]
summary = {}
for method, rs in results.items():
    summary[method] = {"curve": [ms([r["curve"][i][1] for r in rs]) for i in range(len(steps))],
                       "accuracy_diff": ms([r["accuracy_diff"] for r in rs]),
                       "accuracy_diff_se": [r["accuracy_diff_se"] for r in rs]}
with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump({"steps": steps, "summary": summary, "runs": results}, f, indent=1)
lines = [f"held-out greedy pass@1 vs step, {len(args.seeds)} seeds, mean ± std (first and last evals on more problems)",
         "| method | " + " | ".join(f"step {s}" for s in steps) + " | end − start (paired) |",
         "|---" * (len(steps) + 2) + "|"]
for method, s in summary.items():
    cells = " | ".join(f"{m:.3f} ± {d:.3f}" for m, d in s["curve"])
    lines.append(f"| {method} | {cells} | {s['accuracy_diff'][0]:+.3f} ± {s['accuracy_diff'][1]:.3f} |")
print("\n" + "\n".join(lines))
from nanochat.report import get_report  # noqa: E402
get_report().log("Distillation experiment", [vars(args), "\n".join(lines)], column="distill")
