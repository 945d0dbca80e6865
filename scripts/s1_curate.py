"""
s1K-style curation (s1, arXiv 2501.19393, section 2): pick a small SFT set of thinking traces from a large pool
by three criteria, and (with --compare) check that it beats a random set of the same size.

1. quality: the trace is well formed: a non-empty think part, a final `#### N` equal to the gold answer, every
   "a op b = c" line of the thinking right by the calculator, and the whole render fits --max-seq-len.
2. difficulty: a weaker (non-thinking) checkpoint does NOT solve the problem (greedy, its tools on). s1 drops
   what Qwen2.5-7B or -32B already solve.
3. diversity: draw a family (SynthMath's problem families play the role of s1's MSC math domains) uniformly
   at random, then a problem of that family with weight 2^-rank, rank by thinking length, longest first
   (s1 favours longer traces the same way); repeat until --size.

The random baseline is --size problems drawn uniformly from the whole pool (s1's "random 1K" ablation).
Both sets are written as JSONL conversations to <base_dir>/s1/ (curated.jsonl, random.jsonl, stats.json).

--compare SFTs the input checkpoint (--source/--model-tag, e.g. the mid checkpoint) on each set with the
shared loop (nanochat/sft.py) for each of --seeds, then scores both on the same held-out problems (fresh
SynthMath-think items, greedy, thinking uncapped): accuracy, mean thinking tokens, and the paired difference
curated - random per seed; mean +- std over seeds goes to the report.

    python -m scripts.s1_curate --pool 2000 --size 300 --weak-source sft --weak-tag full      # curate only (CPU)
    python -m scripts.s1_curate --pool 2000 --size 300 --weak-tag full --compare --seeds 0,1,2 --source mid
    python -m scripts.s1_curate --device-type cuda ...                                        # one GPU

Outputs: <base_dir>/s1/*.jsonl, stats.json, compare.json; checkpoints sft/s1_<arm>_s<seed>; report section
"s1 curation".
"""
import os
import json
import time
import random
import argparse
import statistics

from nanochat.common import (compute_init, compute_cleanup, get_base_dir, print0, require_nonnegative, require_positive,
                             seed_everything)
from tasks import synthmath
from nanochat.tts import s1_select, trace_problem

# -----------------------------------------------------------------------------
# arguments

parser = argparse.ArgumentParser(description="s1K-style curation of thinking traces, and curated-vs-random SFT.")
parser.add_argument("--pool", type=int, default=2000, help="SynthMath-think training problems to choose from")
parser.add_argument("--pool-seed", type=int, default=7, help="seed of the pool (SynthMath seed; SFT data uses 0)")
parser.add_argument("--max-number", type=int, default=10, help="largest input number of the problems (10: small enough for a tiny model's mental arithmetic)")
parser.add_argument("--size", type=int, default=300, help="examples in the curated set and in the random set")
parser.add_argument("--max-seq-len", type=int, default=256, help="longest rendered conversation kept (quality)")
parser.add_argument("--weak-source", type=str, default="sft", help="stage of the weaker checkpoint for the difficulty filter")
parser.add_argument("--weak-tag", type=str, default=None, help="tag of the weaker checkpoint (default: newest of --weak-source)")
parser.add_argument("--compare", action="store_true", help="SFT on curated and on random sets and compare them on held-out problems")
parser.add_argument("--source", type=str, default="mid", help="--compare: stage of the checkpoint to fine-tune")
parser.add_argument("--model-tag", type=str, default=None, help="--compare: tag of that checkpoint (default: newest)")
parser.add_argument("--seeds", type=str, default="0,1,2", help="--compare: comma-separated training seeds")
parser.add_argument("--num-epochs", type=float, default=3.0, help="--compare: epochs over each set")
parser.add_argument("--examples-per-step", type=int, default=16, help="--compare: conversations per optimizer step")
parser.add_argument("--device-batch-size", type=int, default=8, help="--compare: rows per forward pass")
parser.add_argument("--init-lr-frac", type=float, default=0.1, help="--compare: multiplier of the base lrs (chat_sft's CPU preset)")
parser.add_argument("--eval-problems", type=int, default=200, help="--compare: held-out problems (fresh SynthMath-think, seed --eval-seed)")
parser.add_argument("--eval-seed", type=int, default=1000, help="--compare: seed of the held-out problems")
parser.add_argument("--max-new-tokens", type=int, default=192, help="longest generated completion")
parser.add_argument("--device-type", type=str, default="", help="cuda|cpu|mps (default: autodetect)")
args = parser.parse_args()
require_positive(parser, args, ["pool", "size", "eval_problems", "examples_per_step", "device_batch_size",
                                "max_seq_len", "max_new_tokens"])
require_nonnegative(parser, args, ["init_lr_frac"])
if not args.num_epochs > 0:
    parser.error("--num-epochs must be > 0")
if (error := synthmath.args_error(max_number=args.max_number)):
    parser.error(error)
if not 0 < args.size <= args.pool:
    raise SystemExit(f"error: --size {args.size} must be between 1 and --pool {args.pool}")
try:
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
except ValueError:
    raise SystemExit(f"error: --seeds {args.seeds!r}: give comma-separated integers, e.g. 0,1,2")

ci = compute_init(args.device_type)
if ci.ddp:
    raise SystemExit("error: s1_curate runs in one process; launch it with python -m, not torchrun")

from nanochat.checkpoint import load_model  # noqa: E402
from nanochat.task_eval import evaluate_task, paired_difference  # noqa: E402
from tasks.synthmath import SynthMath  # noqa: E402

out_dir = os.path.join(get_base_dir(), "s1")
os.makedirs(out_dir, exist_ok=True)
t0 = time.time()

# -----------------------------------------------------------------------------
# the pool and the weak model's verdicts

try:
    weak, tokenizer, weak_meta = load_model(args.weak_source, ci.device, tag=args.weak_tag)
except (FileNotFoundError, ValueError, RuntimeError) as e:
    raise SystemExit(f"error (weak checkpoint): {e}")
pool_task = SynthMath("train", size=args.pool, seed=args.pool_seed, max_number=args.max_number, think=True)
pool = [pool_task[i] for i in range(args.pool)]
print0(f"pool: {args.pool} SynthMath-think problems (seed {args.pool_seed}); weak model "
       f"{args.weak_source}/{weak_meta['tag']} step {weak_meta['step']}")
# the weak model's verdicts are the slow part: kept per (checkpoint, pool) and reused by later runs
weak_path = os.path.join(out_dir, f"weak_{args.weak_source}_{weak_meta['tag']}_{weak_meta['step']}_pool{args.pool}_"
                                  f"seed{args.pool_seed}_max{args.max_number}_tok{args.max_new_tokens}.json")
if os.path.exists(weak_path):
    with open(weak_path) as f:
        solved = json.load(f)["solved"]
    print0(f"weak model verdicts reused from {weak_path}")
else:
    weak_eval = evaluate_task(weak, tokenizer, pool_task, name="pool", max_new_tokens=args.max_new_tokens)
    solved = [it["correct"] for it in weak_eval["items"]]  # the weak model answers the plain question, tools on
    with open(weak_path, "w") as f:
        json.dump(dict(solved=solved), f)
print0(f"weak model solves {sum(solved)}/{args.pool} = {sum(solved) / args.pool:.3f} of the pool ({time.time() - t0:.0f}s)")
del weak

# -----------------------------------------------------------------------------
# quality


def quality_problem(conversation, max_seq_len):
    """Why the example is malformed (one phrase), or None when it is fine: the trace checks, then the length."""
    problem = trace_problem(conversation)
    if problem is None and len(tokenizer.render_conversation(conversation)[0]) > max_seq_len:
        problem = "too long"
    return problem


def think_length(conversation):
    """Thinking tokens of the gold trace (s1's proxy for how hard the reasoning is)."""
    think = next(p["text"] for p in conversation["messages"][-1]["content"] if p["type"] == "think")
    return len(tokenizer.encode(think))


problems = [quality_problem(c, args.max_seq_len) for c in pool]
reasons = {}
for p in problems:
    if p is not None:
        key = p.split(" ")[0] if p.startswith("wrong arithmetic") else p
        reasons[key] = reasons.get(key, 0) + 1
good = [i for i, p in enumerate(problems) if p is None]
hard = [i for i in good if not solved[i]]
print0(f"quality: {len(good)}/{args.pool} pass {reasons or ''}; difficulty: {len(hard)} of those unsolved by the weak model")
if len(hard) < args.size:
    raise SystemExit(f"error: only {len(hard)} hard, well-formed problems for --size {args.size}; raise --pool or lower --size")

# -----------------------------------------------------------------------------
# diversity: uniform over families, longer traces first within a family


def describe(indices):
    fams = {}
    for i in indices:
        fams[pool[i]["family"]] = fams.get(pool[i]["family"], 0) + 1
    steps = [len(pool[i]["steps"]) for i in indices]
    return dict(n=len(indices), families=dict(sorted(fams.items())), mean_steps=statistics.mean(steps),
                mean_think_tokens=statistics.mean(lengths[i] for i in indices),
                weak_solved=sum(solved[i] for i in indices) / len(indices))


lengths = [think_length(c) for c in pool]
rng = random.Random(0)
curated = s1_select([c["family"] for c in pool], lengths, hard, args.size, rng)
random_set = random.Random(1).sample(range(args.pool), args.size)
stats = dict(pool=describe(range(args.pool)), quality_failures=reasons, good=len(good), hard=len(hard),
             curated=describe(curated), random=describe(random_set), weak=f"{args.weak_source}/{weak_meta['tag']}")
for name, idx in (("curated", curated), ("random", random_set)):
    with open(os.path.join(out_dir, f"{name}.jsonl"), "w") as f:
        for i in idx:
            f.write(json.dumps(pool[i]) + "\n")
    print0(f"{name}: {json.dumps(stats[name])}")
with open(os.path.join(out_dir, "stats.json"), "w") as f:
    json.dump(stats, f, indent=1)
print0(f"wrote {out_dir}/curated.jsonl, random.jsonl, stats.json ({time.time() - t0:.0f}s)")

# -----------------------------------------------------------------------------
# --compare: SFT on each set, evaluate on the same held-out problems

from nanochat.report import get_report  # noqa: E402

report_data = [vars(args), stats]
summary = {}
if args.compare:
    from nanochat.engine import Engine
    from nanochat.sft import ChatTrainConfig, train_chat_or_exit
    from nanochat.tts import run_problems, sweep_point
    from tasks.critique import ConversationList

    eval_task = SynthMath("train", size=args.eval_problems, seed=args.eval_seed, max_number=args.max_number, think=True)
    # the curated set is all hard problems, the held-out set follows the natural mix: report its hard part too
    hard_eval = {i for i in range(args.eval_problems) if len(eval_task[i]["steps"]) >= 3}
    runs = []
    for seed in seeds:
        row = dict(seed=seed)
        for name, idx in (("curated", curated), ("random", random_set)):
            seed_everything(seed)
            model, tok, meta = load_model(args.source, ci.device, tag=args.model_tag)
            model.train()
            cfg = ChatTrainConfig(stage="sft", model_tag=f"s1_{name}_s{seed}", max_seq_len=args.max_seq_len,
                                  device_batch_size=args.device_batch_size, rows_per_step=args.examples_per_step,
                                  num_epochs=args.num_epochs, init_lr_frac=args.init_lr_frac, eval_every=-1,
                                  eval_batches=1, keep_last=1, source="offline")
            train_task = ConversationList([pool[i] for i in idx], name=f"s1-{name}").shuffle(seed)
            print0(f"seed {seed}: SFT on the {name} set")
            train_chat_or_exit(model, tok, train_task, None, cfg, ci, meta_extra=dict(s1_set=name, s1_stats=stats[name]))
            model.eval()
            recs = run_problems(Engine(model, tok), tok, eval_task, range(args.eval_problems),
                                max_new_tokens=args.max_new_tokens)
            point = sweep_point(recs)
            hard_acc = statistics.mean(r["correct"][0] for r in recs if r["index"] in hard_eval)
            row[name] = dict(accuracy=point["accuracy"], hard_accuracy=hard_acc, think_tokens=point["think_tokens"],
                             items=[dict(index=r["index"], correct=r["correct"][0]) for r in recs])
            print0(f"seed {seed} {name:>7}: held-out accuracy {point['accuracy']:.4f} (3-4 steps: {hard_acc:.4f}), "
                   f"thinking tokens {point['think_tokens']:.1f} ({time.time() - t0:.0f}s)")
        diff, se = paired_difference(row["random"]["items"], row["curated"]["items"])
        row["curated_minus_random"], row["paired_se"] = diff, se
        print0(f"seed {seed}: curated - random = {diff:+.4f} +- {se:.4f} (paired SE)")
        runs.append(row)

    def mean_std(values):
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))

    for key in ("curated", "random"):
        m, s = mean_std([r[key]["accuracy"] for r in runs])
        mh, sh = mean_std([r[key]["hard_accuracy"] for r in runs])
        summary[f"s1 {key} accuracy"] = m
        print0(f"{key:>7}: {m:.4f} +- {s:.4f}, on 3-4 steps {mh:.4f} +- {sh:.4f}, over seeds {seeds}")
        report_data.append(f"{key}: held-out accuracy {m:.4f} +- {s:.4f}, on its {len(hard_eval)} 3-4 step problems "
                           f"{mh:.4f} +- {sh:.4f} (mean +- std over seeds {seeds})")
    m, s = mean_std([r["curated_minus_random"] for r in runs])
    summary["s1 curated - random"] = m
    print0(f"curated - random: {m:+.4f} +- {s:.4f} over seeds")
    report_data.append(f"curated - random: {m:+.4f} +- {s:.4f} (per seed: "
                       + ", ".join(f"{r['curated_minus_random']:+.4f}+-{r['paired_se']:.4f}" for r in runs) + ")")
    with open(os.path.join(out_dir, "compare.json"), "w") as f:
        json.dump(dict(args=vars(args), stats=stats, runs=runs), f, indent=1)

get_report().log("s1 curation", report_data, summary=summary or None, column="s1" if summary else None)
print0(f"done in {time.time() - t0:.0f}s")
compute_cleanup()
