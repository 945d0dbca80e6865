"""
Compare two chat_eval result files item by item: the difference in accuracy with its paired standard error.

    python -m scripts.eval_compare A.json B.json --name "value of pretraining"    # B - A, per common task

Pairing (the same problems scored by both models) removes the variance of problem difficulty, so a real effect
shows at far fewer problems than two independent standard errors would need. CPU only, instant.
"""
import json
import argparse

from nanochat.report import get_report
from nanochat.task_eval import paired_difference

parser = argparse.ArgumentParser(description="Paired comparison of two chat_eval JSON files (B - A)")
parser.add_argument("a", help="chat_eval JSON of the baseline (A)")
parser.add_argument("b", help="chat_eval JSON of the contender (B)")
parser.add_argument("--name", type=str, default="", help="what the comparison measures (report section title)")
args = parser.parse_args()


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: cannot read chat_eval results {path}: {e}")


A, B = load(args.a), load(args.b)
label_a = f"{A['stage']}/{A['tag']}@{A['step']}"
label_b = f"{B['stage']}/{B['tag']}@{B['step']}"
common = [t for t in A["results"] if t in B["results"]]
if not common:
    raise SystemExit(f"error: {args.a} and {args.b} share no task")

rows, summary = [], {}
print(f"B - A with B = {label_b}, A = {label_a}")
for task in common:
    diff, se = paired_difference(A["results"][task]["items"], B["results"][task]["items"])
    acc_a, acc_b = A["results"][task]["accuracy"], B["results"][task]["accuracy"]
    z = diff / se if se > 0 else float("inf") if diff else 0.0
    line = f"{task}: {acc_a:.4f} -> {acc_b:.4f}, diff {diff:+.4f} +- {se:.4f} (paired SE), {z:+.1f} SE"
    print(line)
    rows.append(line)
    summary[f"{task} diff (SE)"] = f"{diff:+.3f} ({z:+.1f})"
title = f"Paired comparison: {args.name or label_b + ' vs ' + label_a}"
get_report().log(title, [{"A": label_a, "B": label_b, "A file": args.a, "B file": args.b}, *rows])
