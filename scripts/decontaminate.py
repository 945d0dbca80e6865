"""
Check a stage's training mixture against the evaluation sets for 8-gram contamination (Tülu 3, arXiv 2411.15124
§3.2; the rule is in nanochat/decontam.py) and print, per training source and evaluation set, how many eval
items it contaminates, which sources are flagged (> 2% of an eval set), and what each action would remove.

The same check runs inside the data loading of mid-training, SFT and RFT (nanochat/chat_data.py
load_stage_data, default action "drop"); this script is the stand-alone report.

    python -m scripts.decontaminate --stage sft --data offline                    # the offline SFT mixture
    python -m scripts.decontaminate --stage mid --data offline --eval MMLU,ARC-Easy,ARC-Challenge
    python -m scripts.decontaminate --mix sciq,openbookqa --action drop-source --out /tmp/decontam.json

CPU only; a minute or two for the default mixtures against every evaluation set.
"""
import json
import time
import argparse

from nanochat.common import print0
from nanochat.chat_data import MIXTURES, build_mixture
from nanochat.decontam import ACTIONS, ITEM_THRESHOLD, N, SOURCE_THRESHOLD, decontaminate, load_eval_sets, summarize
from nanochat.report import get_report
from nanochat.task_eval import DECONTAM_TASKS
from tasks.common import choose_source

parser = argparse.ArgumentParser(description="8-gram decontamination report of a training mixture against the eval sets.")
parser.add_argument("--stage", choices=["mid", "sft"], default="sft", help="whose default mixture to check (when --mix is not given)")
parser.add_argument("--mix", type=str, default=None, help="training mixture 'name[:count],...' (default: the stage's mixture for the data mode)")
parser.add_argument("--data", choices=["auto", "hf", "offline"], default="auto", help="data sources: Hugging Face, offline, or auto")
parser.add_argument("--eval", type=str, default=",".join(DECONTAM_TASKS), help="comma-separated evaluation sets (nanochat/task_eval.py names)")
parser.add_argument("--action", choices=ACTIONS, default="drop", help="what to do with contamination (reported here; data loading applies it)")
parser.add_argument("--threshold", type=float, default=ITEM_THRESHOLD, help="an eval item is contaminated above this fraction of its tokens covered")
parser.add_argument("--source-threshold", type=float, default=SOURCE_THRESHOLD, help="a source is flagged above this fraction of one eval set contaminated")
parser.add_argument("--ngram", type=int, default=N, help="n-gram length in word tokens")
parser.add_argument("--out", type=str, default=None, help="also write the report as JSON to this path")
args = parser.parse_args()

try:
    mode = choose_source(args.data, "decontamination")
    mixture, parts = build_mixture(args.mix or MIXTURES[(args.stage, mode)], "train", mode)
except (ValueError, RuntimeError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}")
sources = [(name, task) for (name, _), task in zip(parts, mixture.tasks)]
eval_sets = load_eval_sets([e.strip() for e in args.eval.split(",") if e.strip()], mode, log=print0)
if not eval_sets:
    raise SystemExit("error: no evaluation set could be loaded; name some with --eval (see nanochat/task_eval.py)")

t0 = time.time()
_, report = decontaminate(sources, eval_sets, action=args.action, threshold=args.threshold,
                          source_threshold=args.source_threshold, n=args.ngram)
seconds = time.time() - t0
print0(f"{sum(len(t) for _, t in sources):,} training items from {len(sources)} sources vs "
       f"{sum(len(t) for _, t in eval_sets):,} eval items from {len(eval_sets)} sets: {seconds:.1f}s")
print0(f"{'source':20s} {'items':>7s}  contaminated eval items (fraction of the set)")
sizes = dict((name, len(t)) for name, t in eval_sets)
for name, task in sources:
    hits = report["contaminated"].get(name, {})
    cells = ", ".join(f"{e} {c} ({c / sizes[e]:.1%})" for e, c in hits.items()) or "-"
    flag = "  FLAGGED" if name in report["flagged"] else ""
    print0(f"{name:20s} {len(task):7,d}  {cells}{flag}")
print0(summarize(report))
report.update(mixture=args.mix or MIXTURES[(args.stage, mode)], eval_sets=[n for n, _ in eval_sets], seconds=seconds)
if args.out:
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
get_report().log("Decontamination check", [vars(args), {"result": summarize(report), "seconds": seconds}])
