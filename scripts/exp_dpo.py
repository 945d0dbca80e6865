"""
Experiment: DPO vs length-normalized DPO vs SFT-on-chosen, on the same on-policy pairs, several seeds.

For each seed: build one pair file with scripts.chat_dpo (policy + --pool, judge = verifier + format + length),
then train the starting model on it with each loss and read back each run's result.json. Prints a table of
held-out judge score, accuracy, response length (the length drift) and their change from the start,
mean +- std over seeds. Every chat_dpo flag not listed here can be passed after `--`.

    python -m scripts.exp_dpo --source sft --model-tag pilot --pool rl/pilot_rl --seeds 1 2 3
    python -m scripts.exp_dpo --seeds 1 -- --num-prompts 64 --eval-problems 50   # a quick look

Results: <base_dir>/runs/<name>/summary.json, the table on stdout and the "DPO experiment" report section
(docs/dpo.md has the 2026-11-21 runs).
"""
import os
import sys
import json
import argparse
import statistics

from nanochat.common import get_base_dir, run_stage

parser = argparse.ArgumentParser(description="DPO vs DPO-norm vs SFT-on-chosen over seeds (runs scripts.chat_dpo).")
parser.add_argument("--source", type=str, default="sft", help="stage of the starting checkpoint")
parser.add_argument("--model-tag", type=str, default=None, help="tag of the starting checkpoint")
parser.add_argument("--pool", type=str, default="", help="extra checkpoints answering prompts (chat_dpo --pool)")
parser.add_argument("--losses", nargs="+", default=["dpo", "dpo-norm", "sft"], help="losses to compare")
parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seeds: each builds its own pairs")
parser.add_argument("--name", type=str, default="exp_dpo", help="run name prefix (and the summary's directory)")
args, extra = parser.parse_known_args()
extra = [a for a in extra if a != "--"]

out_dir = os.path.join(get_base_dir(), "runs", args.name)
os.makedirs(out_dir, exist_ok=True)
common = ["--source", args.source] + (["--model-tag", args.model_tag] if args.model_tag else []) + extra


def chat_dpo(*flags):
    cmd = [sys.executable, "-m", "scripts.chat_dpo", *common, *flags]
    run_stage(cmd)


# -----------------------------------------------------------------------------
# runs

results = {loss: [] for loss in args.losses}
for seed in args.seeds:
    pairs_file = os.path.join(out_dir, f"pairs_seed{seed}.jsonl")
    if not os.path.exists(pairs_file):
        chat_dpo("--seed", str(seed), "--pool", args.pool, "--pairs-out", pairs_file, "--num-steps", "0",
                 "--skip-start-eval", "--eval-problems", "1", "--run", f"{args.name}_pairs_s{seed}")
    for loss in args.losses:
        run = f"{args.name}_{loss}_s{seed}"
        chat_dpo("--seed", str(seed), "--pairs-file", pairs_file, "--loss", loss, "--run", run,
                 "--output-tag", run)
        with open(os.path.join(get_base_dir(), "runs", run, "result.json")) as f:
            results[loss].append(json.load(f))

# -----------------------------------------------------------------------------
# table: mean +- std over seeds


def ms(values):
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


keys = ["start_score", "score", "score_diff", "start_accuracy", "accuracy", "accuracy_diff", "start_length",
        "length", "length_drift", "len_chosen", "len_rejected", "pairs"]
summary = {loss: {k: ms([r[k] for r in rs]) for k in keys} for loss, rs in results.items()}
with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump({"summary": summary, "runs": results}, f, indent=1)
lines = [f"{len(args.seeds)} seeds, mean +- std",
         "| loss | judge score start -> end | Δ score | accuracy start -> end | Δ accuracy | length start -> end | Δ length |",
         "|---|---|---|---|---|---|---|"]
for loss, s in summary.items():
    f = lambda k, p=3: f"{s[k][0]:.{p}f} ± {s[k][1]:.{p}f}"
    lines.append(f"| {loss} | {s['start_score'][0]:.3f} -> {f('score')} | {f('score_diff')} | {s['start_accuracy'][0]:.3f} -> "
                 f"{f('accuracy')} | {f('accuracy_diff')} | {s['start_length'][0]:.1f} -> {f('length', 1)} | {f('length_drift', 1)} |")
lines.append(f"pairs per seed: {[r['pairs'] for r in results[args.losses[0]]]}; mean length chosen "
             f"{summary[args.losses[0]]['len_chosen'][0]:.1f}, rejected {summary[args.losses[0]]['len_rejected'][0]:.1f}")
print("\n" + "\n".join(lines))
from nanochat.report import get_report  # noqa: E402
get_report().log("DPO experiment", [vars(args), "\n".join(lines)], column="dpo")
