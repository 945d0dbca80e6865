"""
CFT, critique fine-tuning (Wang et al., arXiv 2501.17703): teach the model to critique candidate solutions
instead of imitating gold ones, then see whether it answers better (and how well it judges).

1. Candidates per training question (SynthMath, unseen items): the input model's own samples at T = 1 with the
   calculator OFF (so its arithmetic can be wrong), one gold solution, and corruptions of the gold one
   (tasks/critique.py: wrong step result, propagated error, wrong operation, wrong final line).
2. Critiques: the rule-based step critic (default) or any checkpoint as a teacher critic (--critic sft:d4),
   whose greedy critiques are kept when they end in a parseable conclusion. Critiques of correct candidates
   are kept too ("Conclusion: right").
3. Train on (question + candidate) -> critique through the shared SFT loop (nanochat/sft.py): the user turn
   is masked, so the loss is on the critique only.
4. Evaluate: direct answering (the plain question, greedy, calculator on, as chat_eval does) and judging
   (greedy critique of held-out (question, candidate) pairs, half right, half corrupted; accuracy of its
   Conclusion against the rule critic's verdict).

--arm picks what to train on: cft (critiques), or the paper's baselines at the same token budget: sft-gold
(gold solutions of the same questions), sft-noisy (the candidates as answers, right or wrong), sft-verified
(only the candidates the critic calls right). --experiment trains all four arms for each of --seeds from the
same input checkpoint and reports mean +- std over seeds (every arm sees --token-budget rendered tokens).

    python -m scripts.chat_cft --source sft --model-tag pilot                 # CPU: one CFT run
    python -m scripts.chat_cft --arm sft-verified                             # a baseline arm
    python -m scripts.chat_cft --critic sft:d4                                # a checkpoint as teacher critic
    python -m scripts.chat_cft --experiment --seeds 0,1,2                     # the CFT vs SFT experiment
    torchrun --standalone --nproc_per_node=8 -m scripts.chat_cft              # GPUs (every rank builds the same pool; untested)

Outputs: checkpoints in <base_dir>/checkpoints/cft/<tag>-<arm>-s<seed>/, the experiment's numbers in
<base_dir>/cft/experiment.json, report section "Chat CFT". Tests: tests/test_chat_cft.py, tests/test_critique.py.
"""
import argparse
import json
import os
import random
import statistics

import torch

from nanochat.common import (compute_init, compute_cleanup, get_base_dir, print0, require_nonnegative, require_positive,
                             seed_everything)
from nanochat.engine import Engine
from nanochat.report import get_report
from nanochat.sft import add_train_args, check_train_args, config_from_args, load_input_model, train_chat_or_exit
from nanochat.task_eval import evaluate_task, paired_difference
from tasks.critique import (CORRUPTIONS, ConversationList, completion_to_solution, corrupt, critique,
                            critique_conversation, critique_prompt, parse_conclusion)
from tasks.gsm8k import gsm8k_conversation
from tasks import synthmath
from tasks.synthmath import SynthMath

ARMS = ("cft", "sft-gold", "sft-noisy", "sft-verified")

# -----------------------------------------------------------------------------
# arguments

parser = argparse.ArgumentParser(description="Critique fine-tuning (CFT) and its SFT baselines at equal token budget.")
add_train_args(parser, dict(source="sft", device_batch_size=8, init_lr_frac=0.1, eval_every=-1, eval_batches=4,
                            eval_tasks="", eval_max_problems=50))
parser.add_argument("--arm", choices=ARMS, default="cft", help="training data: critiques (cft) or an SFT baseline")
parser.add_argument("--experiment", action="store_true", help="train and evaluate every arm for each of --seeds")
parser.add_argument("--seeds", type=str, default="0,1,2", help="comma-separated seeds of --experiment")
parser.add_argument("--critic", type=str, default="rule", help="'rule' (the step checker) or a teacher checkpoint 'stage[:tag]'")
parser.add_argument("--num-questions", type=int, default=300, help="training questions (SynthMath train split, unseen items)")
parser.add_argument("--question-seed", type=int, default=1, help="SynthMath seed of the training questions (SFT used 0)")
parser.add_argument("--min-steps", type=int, default=1, help="fewest calculator steps of the questions")
parser.add_argument("--max-steps", type=int, default=3, help="most calculator steps of the questions")
parser.add_argument("--samples-per-question", type=int, default=2, help="the model's own candidates per question")
parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the candidates")
parser.add_argument("--no-tools", action="store_true", help="sample candidates with the calculator off (the model's own arithmetic)")
parser.add_argument("--corruptions-per-question", type=int, default=2, help="corrupted gold candidates per question")
parser.add_argument("--max-new-tokens", type=int, default=96, help="longest sampled candidate / direct answer")
parser.add_argument("--critique-tokens", type=int, default=128, help="longest generated critique (teacher, judge eval)")
parser.add_argument("--token-budget", type=int, default=0, help="rendered tokens per arm (0: the size of the CFT data)")
parser.add_argument("--examples-per-step", type=int, default=16, help="conversations per optimizer step")
parser.add_argument("--eval-seed", type=int, default=1001, help="SynthMath seed of the held-out problems and judge pairs")
parser.add_argument("--eval-problems", type=int, default=200, help="held-out problems for direct answering")
parser.add_argument("--judge-pairs", type=int, default=200, help="held-out (question, candidate) pairs for the judge eval")
parser.add_argument("--summarize", action="store_true", help="no training: print the summary of the runs saved under <base_dir>/cft/runs for --seeds")
args = parser.parse_args()
check_train_args(parser, args)
require_positive(parser, args, ["num_questions", "samples_per_question", "max_new_tokens", "critique_tokens",
                                "examples_per_step", "eval_problems", "judge_pairs"])
require_nonnegative(parser, args, ["temperature", "corruptions_per_question", "token_budget"])
if (error := synthmath.args_error(args.min_steps, args.max_steps)):
    parser.error(error)
args.schedule = "linear"
if args.critic != "rule" and args.critic.count(":") > 1:
    raise SystemExit(f"error: --critic {args.critic!r}: use 'rule' or 'stage[:tag]', e.g. 'sft:d4'")
try:
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.experiment else [args.seed]
except ValueError:
    raise SystemExit(f"error: --seeds {args.seeds!r}: use comma-separated integers, e.g. 0,1,2")

ci = compute_init(args.device_type, seed=args.seed)

# -----------------------------------------------------------------------------
# candidates and critiques


def questions(seed_offset):
    """The training questions of one seed: a disjoint slice of unseen SynthMath train items per seed."""
    n = args.num_questions
    task = SynthMath("train", size=n * (seed_offset + 1), seed=args.question_seed, min_steps=args.min_steps,
                     max_steps=args.max_steps)
    return [task[i] for i in range(n * seed_offset, n * (seed_offset + 1))]


@torch.no_grad()
def own_samples(model, tokenizer, conv, seed):
    """The model's candidates for one question at T = args.temperature (calculator on unless --no-tools)."""
    engine = Engine(model, tokenizer)
    prompt = tokenizer.render_for_completion(conv)
    rows, _ = engine.generate_batch(prompt, num_samples=args.samples_per_question, max_tokens=args.max_new_tokens,
                                    temperature=args.temperature, seed=seed, use_tools=not args.no_tools)
    return [completion_to_solution(tokenizer.decode(r[len(prompt):])) for r in rows]


@torch.no_grad()
def teacher_critique(critic_model, tokenizer, conv, candidate):
    """(text, verdict) of a checkpoint's greedy critique; verdict None when it reaches no conclusion."""
    prompt = tokenizer.render_for_completion(dict(messages=[dict(role="user", content=critique_prompt(
        conv["messages"][0]["content"], candidate))]))
    rows, _ = Engine(critic_model, tokenizer).generate_batch(prompt, max_tokens=args.critique_tokens, temperature=0.0)
    text = tokenizer.decode(rows[0][len(prompt):]).strip()
    return text, parse_conclusion(text)


def build_pool(model, tokenizer, seed, critic_model=None):
    """Per training question: its candidates (own samples, a gold one, corruptions), each with a critique."""
    rng = random.Random(f"cft-pool-{seed}")
    pool, dropped = [], 0
    convs = questions(seed)
    model.eval()
    for i, conv in enumerate(convs):
        cands = [("sample", s) for s in own_samples(model, tokenizer, conv, seed=1_000_003 * seed + i)]
        cands.append(("gold", rng.choice(conv["solutions"])))
        for kind in rng.sample(CORRUPTIONS, min(args.corruptions_per_question, len(CORRUPTIONS))):
            bad = corrupt(rng.choice(conv["solutions"]), kind, rng)
            if bad is not None:
                cands.append((kind, bad))
        for kind, cand in cands:
            if critic_model is None:
                text, verdict = critique(conv, cand)
            else:
                text, verdict = teacher_critique(critic_model, tokenizer, conv, cand)
                if verdict is None:
                    dropped += 1
                    continue
            pool.append(dict(conv=conv, kind=kind, candidate=cand, critique=text, verdict=verdict))
        if (i + 1) % 50 == 0:
            print0(f"  pool: {i + 1}/{len(convs)} questions, {len(pool)} candidates")
    model.train()
    if dropped:
        print0(f"  teacher critic reached no conclusion on {dropped} candidates (dropped)")
    if not pool:
        raise SystemExit(f"error: the teacher critic {args.critic} ended no critique with 'Conclusion: right|wrong'; "
                         f"use a critic trained by chat_cft, raise --critique-tokens, or use --critic rule")
    return pool


# -----------------------------------------------------------------------------
# the training data of each arm, at an equal token budget


def arm_conversations(arm, pool):
    if arm == "cft":
        return [critique_conversation(p["conv"]["messages"][0]["content"], p["candidate"], p["critique"], p["verdict"])
                for p in pool]
    if arm == "sft-gold":
        convs = {id(p["conv"]): p["conv"] for p in pool}.values()
        return [gsm8k_conversation(c["messages"][0]["content"], s) for c in convs for s in c["solutions"]]
    out = []
    for p in pool:
        if p["kind"] == "gold" or (arm == "sft-verified" and not p["verdict"]):
            continue  # noisy/verified: the candidates a real pipeline would have (no gold copies)
        try:
            out.append(gsm8k_conversation(p["conv"]["messages"][0]["content"], p["candidate"]))
        except ValueError:  # a sample without a final '#### N' line cannot be an answer
            continue
    return out


def fill_budget(convs, tokenizer, budget, max_len, seed):
    """Shuffled conversations, cycled until their rendered tokens reach `budget`; rows longer than max_len dropped."""
    lengths = [(c, len(tokenizer.render_conversation(c, max_tokens=1 << 30)[0])) for c in convs]
    lengths = [(c, n) for c, n in lengths if n <= max_len + 1]
    if not lengths:
        raise SystemExit("error: no training conversation fits the model's context; raise --max-seq-len")
    rng = random.Random(seed)
    out, total = [], 0
    while total < budget:
        rng.shuffle(lengths)
        for c, n in lengths:
            out.append(c)
            total += n
            if total >= budget:
                break
    return out, total


# -----------------------------------------------------------------------------
# evaluation


def judge_pairs():
    """Held-out pairs: even items a gold solution, odd items a corruption (cycling the kinds); rule verdicts."""
    task = SynthMath("train", size=args.eval_problems + args.judge_pairs, seed=args.eval_seed,
                     min_steps=args.min_steps, max_steps=args.max_steps)
    out = []
    for j in range(args.judge_pairs):
        conv, rng = task[args.eval_problems + j], random.Random(f"judge-{j}")
        cand = conv["solutions"][j % len(conv["solutions"])]
        if j % 2:
            cand = corrupt(cand, CORRUPTIONS[(j // 2) % len(CORRUPTIONS)], rng) or corrupt(cand, "wrong_final", rng)
        text, verdict = critique(conv, cand)
        out.append(critique_conversation(conv["messages"][0]["content"], cand, text, verdict))
    return ConversationList(out, name="CFT-judge")


DIRECT = SynthMath("train", size=args.eval_problems, seed=args.eval_seed, min_steps=args.min_steps, max_steps=args.max_steps)
JUDGE = judge_pairs()


def evaluate(model, tokenizer, label):
    direct = evaluate_task(model, tokenizer, DIRECT, name="direct", max_new_tokens=args.max_new_tokens)
    judge = evaluate_task(model, tokenizer, JUDGE, name="judge", max_new_tokens=args.critique_tokens)
    print0(f"  {label}: direct {direct['accuracy']:.4f} +- {direct['stderr']:.4f} | judge {judge['accuracy']:.4f} "
           f"+- {judge['stderr']:.4f} ({direct['n']} problems, {judge['n']} pairs)")
    return dict(direct=direct, judge=judge)


# -----------------------------------------------------------------------------
# one arm: fresh copy of the input model, train, evaluate


def run_arm(arm, pool, seed, budget, tokenizer, input_tag):
    seed_everything(seed)
    model, _, _ = load_input_model(args, ci.device)
    max_len = args.max_seq_len or model.config.sequence_len
    convs, tokens = fill_budget(arm_conversations(arm, pool), tokenizer, budget, max_len, seed)
    tag = f"{args.output_tag or input_tag}-{arm}-s{seed}"
    print0(f"[{arm} seed {seed}] {len(convs):,} conversations, {tokens:,} rendered tokens -> cft/{tag}")
    cfg = config_from_args(args, "cft", packed=False, rows_per_step=args.examples_per_step, model_tag=tag,
                           max_seq_len=max_len)
    cfg.num_epochs, cfg.num_iterations, cfg.keep_last = 1.0, -1, 1
    meta = dict(source=dict(stage=args.source, tag=input_tag), arm=arm, seed=seed, critic=args.critic, tokens=tokens)
    summary = train_chat_or_exit(model, tokenizer, ConversationList(convs, name=arm), None, cfg, ci, meta_extra=meta)
    result = evaluate(model, tokenizer, f"{arm} seed {seed}")
    result.update(arm=arm, seed=seed, conversations=len(convs), tokens=tokens, steps=summary["steps"],
                  checkpoint=summary["checkpoint"])
    return result


def mean_std(xs):
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


# -----------------------------------------------------------------------------
# main: every evaluated model is saved as it finishes (runs/<name>.json, per-item results included), so seeds
# can run as separate processes and a cut-short experiment keeps what it finished

runs_dir = os.path.join(get_base_dir(), "cft", "runs")
os.makedirs(runs_dir, exist_ok=True)
arms = ARMS if args.experiment else (args.arm,)


def load_run(name):
    path = os.path.join(runs_dir, f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else None


def save_run(name, result):
    with open(os.path.join(runs_dir, f"{name}.json"), "w") as f:
        json.dump(result, f)


if not args.summarize:
    base_model, tokenizer, input_meta = load_input_model(args, ci.device)
    critic_model = None
    if args.critic != "rule":
        from nanochat.checkpoint import load_model
        stage, _, tag = args.critic.partition(":")
        try:
            critic_model, _, _ = load_model(stage, ci.device, tag=tag or None)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            raise SystemExit(f"error: --critic {args.critic}: {e}")
        critic_model.eval()
    input_key = dict(source=args.source, tag=input_meta["tag"], step=input_meta["step"], eval_seed=args.eval_seed,
                     eval_problems=args.eval_problems, judge_pairs=args.judge_pairs, min_steps=args.min_steps,
                     max_steps=args.max_steps, max_new_tokens=args.max_new_tokens, critique_tokens=args.critique_tokens)
    cached = load_run("input")
    if cached is None or cached.get("key") != input_key:  # evaluated once per input model and eval settings
        print0(f"evaluating the input model ({args.source}/{input_meta['tag']})")
        save_run("input", dict(evaluate(base_model, tokenizer, "input"), arm="input", key=input_key))
    for seed in seeds:
        print0(f"seed {seed}: sampling candidates for {args.num_questions} questions (T={args.temperature}, "
               f"calculator {'off' if args.no_tools else 'on'})")
        pool = build_pool(base_model, tokenizer, seed, critic_model)
        samples = [p for p in pool if p["kind"] == "sample"]
        pool_stats = dict(candidates=len(pool), right=sum(p["verdict"] for p in pool), samples=len(samples),
                          samples_right=sum(p["verdict"] for p in samples))
        print0(f"  {pool_stats['candidates']:,} candidates, {pool_stats['right']:,} judged right; own samples right: "
               f"{pool_stats['samples_right']}/{pool_stats['samples']}")
        max_len = args.max_seq_len or base_model.config.sequence_len
        lengths = [len(tokenizer.render_conversation(c, max_tokens=1 << 30)[0]) for c in arm_conversations("cft", pool)]
        budget = args.token_budget or sum(n for n in lengths if n <= max_len + 1)  # one epoch of the CFT data
        print0(f"  token budget per arm: {budget:,} (CFT rows longer than the context: {sum(n > max_len + 1 for n in lengths)})")
        for arm in arms:
            r = run_arm(arm, pool, seed, budget, tokenizer, input_meta["tag"])
            save_run(f"{arm}-s{seed}", dict(r, pool=pool_stats))

# -----------------------------------------------------------------------------
# summary: mean +- std over seeds, and paired differences against SFT on gold (same seed, same items)


start = load_run("input")
results = {(arm, seed): load_run(f"{arm}-s{seed}") for arm in arms for seed in seeds}
summary = {}
for arm in arms:
    done = [seed for seed in seeds if results[(arm, seed)]]
    if not done:
        continue
    row = dict(seeds=done, tokens=statistics.mean(results[(arm, s)]["tokens"] for s in done))
    for key in ("direct", "judge"):
        row[key] = mean_std([results[(arm, s)][key]["accuracy"] for s in done])
        paired = [s for s in done if arm != "sft-gold" and results.get(("sft-gold", s))]
        if paired:
            row[f"{key} - sft-gold"] = mean_std([paired_difference(results[("sft-gold", s)][key]["items"],
                                                                   results[(arm, s)][key]["items"])[0] for s in paired])
    summary[arm] = row
if start:
    print0(f"\ninput model: direct {start['direct']['accuracy']:.4f}, judge {start['judge']['accuracy']:.4f}")
print0(f"{'arm':<14} {'seeds':<8} {'direct':>17} {'judge':>17} {'direct - gold':>17} {'judge - gold':>17}")
fmt = lambda ms: f"{ms[0]:.4f} +- {ms[1]:.4f}" if ms else "-"  # noqa: E731
for arm, row in summary.items():
    print0(f"{arm:<14} {','.join(map(str, row['seeds'])):<8} {fmt(row['direct']):>17} {fmt(row['judge']):>17} "
           f"{fmt(row.get('direct - sft-gold')):>17} {fmt(row.get('judge - sft-gold')):>17}")
out_path = os.path.join(get_base_dir(), "cft", "summary.json")
with open(out_path, "w") as f:
    json.dump(dict(args=vars(args), summary=summary), f, indent=1)
print0(f"summary: {out_path} (mean +- std over seeds; '- sft-gold': paired difference on the same items)")
get_report().log("Chat CFT", [vars(args), {f"{arm} {k}": (f"{v[0]:.4f} +- {v[1]:.4f}" if isinstance(v, tuple) else v)
                                           for arm, row in summary.items() for k, v in row.items()}], column="cft")
compute_cleanup()
