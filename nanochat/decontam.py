"""
Decontamination of training data against the evaluation sets, as in Tülu 3 (arXiv 2411.15124, §3.2):
8-gram overlap between training prompts and evaluation items.

The rule (Tülu 3's, on word tokens):
  - an index of every 8-gram of every training prompt (the user turns of a conversation; the answers are
    not what leaks a benchmark, its questions are);
  - an evaluation item is CONTAMINATED when more than 50% of its tokens are covered by 8-grams it shares
    with a SINGLE training item (coverage: the union of the token positions of the shared 8-grams);
  - a training SOURCE is FLAGGED when it contaminates more than 2% of any one evaluation set.
Tokens are lowercased words and numbers (`\\w+`), not BPE ids: the check runs before any tokenizer exists and
does not change when the tokenizer does. Items shorter than 8 tokens have no 8-gram; they count as
contaminated only when some training prompt has exactly the same tokens (so "Introduce yourself." matches
only itself, not every prompt that contains those words).

What this catches and what it does not (tests/test_decontam.py plants each case):
  - exact copies, and copies with text added before or after (a prefix/suffix only adds uncovered tokens to
    the TRAINING item; the eval item stays fully covered);
  - copies with changed numbers only partially: each changed token breaks the 8 grams through it, so an
    item is caught when its changes are few or bunched, not when they are spread every few words;
  - NOT paraphrases (a documented limitation of n-gram matching; Tülu 3 accepts it too).
N-grams seen in more than `max_postings` training prompts (boilerplate like "Answer with the letter of the
correct choice") are skipped: they say nothing about which item leaked, and would make lookups quadratic.

Actions, per training source: "report" (count only), "drop" (remove the training items that contaminate
some evaluation item: the default of mid/SFT/RL data loading, nanochat/chat_data.py), "drop-source" (remove
every flagged source whole, and the matching items of the others).

    from nanochat.decontam import decontaminate
    kept, report = decontaminate([("synthmath", task_a), ("mcq", task_b)], [("MMLU", mmlu)], action="drop")
    python -m scripts.decontaminate --mix synthmath:1000,arc-easy-val --eval ARC-Easy,MMLU   # the CLI

Run the tests with `python -m pytest tests/test_decontam.py -q`.
"""
import re
import copy
import hashlib
from collections import defaultdict

N = 8  # n-gram length (Tülu 3)
ITEM_THRESHOLD = 0.5  # an eval item is contaminated above this covered fraction of its tokens
SOURCE_THRESHOLD = 0.02  # a source is flagged above this fraction of contaminated items of one eval set
ACTIONS = ("report", "drop", "drop-source")
_WORD = re.compile(r"\w+")

# -----------------------------------------------------------------------------
# text -> tokens


def tokens(text):
    """Lowercased word/number tokens: 'Ava has 3 apples.' -> ['ava', 'has', '3', 'apples']."""
    return _WORD.findall(text.lower())


def _content_text(content):
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content if isinstance(p, dict))


def prompt_text(conversation):
    """The text a contamination check compares: every user (and system) turn of a conversation."""
    return "\n".join(_content_text(m["content"]) for m in conversation["messages"] if m["role"] != "assistant")


# -----------------------------------------------------------------------------
# the index over training prompts


def _stable_hash(toks):
    """A 64-bit hash of a token sequence that is the same in every process (cacheable, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(" ".join(toks).encode(), digest_size=8).digest(), "little")


def fingerprint(toks, n=N):
    """(number of tokens, hashes of its n-grams in order), or (length, [hash of all tokens]) when shorter than n."""
    if len(toks) < n:
        return len(toks), [_stable_hash(toks)]
    return len(toks), [_stable_hash(toks[i:i + n]) for i in range(len(toks) - n + 1)]


class NgramIndex:
    """n-grams of training prompts -> the ids of the prompts that contain them (in memory)."""

    def __init__(self, n=N, max_postings=1000):
        self.n, self.max_postings = n, max_postings
        self.postings = defaultdict(list)  # hash of an n-gram -> doc ids (each once)
        self.whole = defaultdict(list)  # hash of ALL the tokens of a short prompt (< n tokens) -> doc ids

    def add(self, doc_id, text):
        length, hashes = fingerprint(tokens(text), self.n)
        if length < self.n:
            self.whole[hashes[0]].append(doc_id)
            return
        for h in set(hashes):
            self.postings[h].append(doc_id)

    def best_match(self, text):
        """(doc id, covered fraction) of the training prompt covering most of `text`'s tokens; (None, 0.0) if none."""
        return self.match(*fingerprint(tokens(text), self.n))

    def match(self, length, hashes):
        """best_match for a fingerprint (what the eval-set cache stores)."""
        coverage = self.coverage(length, hashes)
        if not coverage:
            return None, 0.0
        doc = max(coverage, key=coverage.get)  # the first of equals: dicts keep insertion order
        return doc, coverage[doc]

    def coverage(self, length, hashes):
        """{doc id: fraction of the query's tokens covered by the n-grams it shares with that training prompt}."""
        if length < self.n:
            return {d: 1.0 for d in self.whole.get(hashes[0], ())} if length else {}
        shared = self.postings.keys() & hashes  # one C-level set operation: most items share nothing
        if not shared:
            return {}
        covered = defaultdict(set)  # doc id -> positions of the query's tokens that its shared grams cover
        for i, h in enumerate(hashes):
            docs = self.postings[h] if h in shared else ()
            if len(docs) > self.max_postings:
                continue
            for d in docs:
                covered[d].update(range(i, i + self.n))
        return {d: len(positions) / length for d, positions in covered.items()}


# -----------------------------------------------------------------------------
# decontaminating training sources against evaluation sets


def subset(task, keep):
    """A view of `task` with only the examples at positions `keep` (like Task.shuffle, nothing copied)."""
    view = copy.copy(task)
    indices = task.indices
    view._indices = [indices[i] for i in keep]
    return view


def find_contamination(sources, eval_sets, threshold=ITEM_THRESHOLD, n=N):
    """
    sources: [(name, Task)] of training data; eval_sets: [(name, Task or list of fingerprints)] (the
    fingerprints of `eval_fingerprints`, cached). Returns (matched, counts):
    matched[s] = positions in source s that contaminate some eval item (each over the threshold on its own,
    duplicates included); counts[(source name, eval name)] = how many items of that eval set the source contaminates.
    """
    index = NgramIndex(n)
    for s, (_, task) in enumerate(sources):
        for j in range(len(task)):
            index.add((s, j), prompt_text(task[j]))
    matched = defaultdict(set)
    counts = defaultdict(int)
    for eval_name, eval_items in eval_sets:
        prints = eval_items if isinstance(eval_items, list) else (fingerprint(tokens(prompt_text(c)), n) for c in eval_items)
        for length, hashes in prints:
            # every training item over the threshold contaminates this eval item (duplicates too, not just the best)
            hits = [doc for doc, frac in index.coverage(length, hashes).items() if frac > threshold]
            for s, j in hits:
                matched[s].add(j)
            for s in {s for s, _ in hits}:
                counts[(sources[s][0], eval_name)] += 1
    return matched, counts


def decontaminate(sources, eval_sets, action="drop", threshold=ITEM_THRESHOLD, source_threshold=SOURCE_THRESHOLD, n=N):
    """
    Apply an action to training sources [(name, Task)] given evaluation sets [(name, Task)]. Returns
    (sources after the action, report) where report = {"removed": {source: items removed}, "flagged": {source:
    {eval set: fraction contaminated}}, "contaminated": {source: {eval set: items}}, "action": action}.
    A dropped-whole source is left out of the returned list.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown decontamination action {action!r}; choose one of {', '.join(ACTIONS)}")
    matched, counts = find_contamination(sources, eval_sets, threshold, n)
    eval_sizes = {name: len(task) for name, task in eval_sets}
    contaminated, flagged = defaultdict(dict), defaultdict(dict)
    for (src, ev), c in counts.items():
        contaminated[src][ev] = c
        if c / eval_sizes[ev] > source_threshold:
            flagged[src][ev] = c / eval_sizes[ev]
    out, removed = [], {}
    for s, (name, task) in enumerate(sources):
        if action == "drop-source" and name in flagged:
            removed[name] = len(task)
            continue
        if action in ("drop", "drop-source") and matched.get(s):
            keep = [j for j in range(len(task)) if j not in matched[s]]
            removed[name] = len(task) - len(keep)
            task = subset(task, keep)
        out.append((name, task))
    return out, dict(action=action, removed=removed, flagged=dict(flagged), contaminated=dict(contaminated))


def summarize(report):
    """One line for logs: 'removed 3 (arc-easy-val 3); flagged: arc-easy-val (ARC-Easy 2.5%)'."""
    removed = sum(report["removed"].values())
    text = f"{report['action']}: removed {removed:,}"
    if removed:
        text += " (" + ", ".join(f"{k} {v:,}" for k, v in report["removed"].items() if v) + ")"
    if report["flagged"]:
        text += "; flagged: " + ", ".join(f"{s} (" + ", ".join(f"{e} {f:.1%}" for e, f in evs.items()) + ")"
                                          for s, evs in report["flagged"].items())
    return text


# -----------------------------------------------------------------------------
# the evaluation sets a data loader checks against


def eval_fingerprints(names, source="offline", cache_dir=None, n=N, log=print):
    """
    [(name, [fingerprint of item 0, ...])] of task_eval sets, read from `cache_dir` when there (evaluation
    sets are fixed data: loading MMLU/ARC and hashing 20k items costs ~15 s, the cached lists about one).
    """
    import os
    import json
    out = []
    for name in names:
        path = os.path.join(cache_dir, f"{source}_{name}_n{n}.json") if cache_dir else None
        if path and os.path.exists(path):
            with open(path) as f:
                out.append((name, [tuple(x) for x in json.load(f)]))
            continue
        loaded = load_eval_sets([name], source, log)
        if not loaded:
            continue
        toks = [fingerprint(tokens(prompt_text(c)), n) for c in loaded[0][1]]
        if path:
            os.makedirs(cache_dir, exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(toks, f)
            os.replace(path + ".tmp", path)
        out.append((name, toks))
    return out


def load_eval_sets(names, source="offline", log=print):
    """[(name, Task)] of task_eval names; a set that cannot be loaded (offline, no cache) is skipped with a note."""
    from nanochat.task_eval import get_eval_task
    out = []
    for name in names:
        try:
            out.append((name, get_eval_task(name, source)))
        except (ValueError, RuntimeError, FileNotFoundError, OSError, ImportError) as e:
            log(f"[decontam] skipping eval set {name}: {str(e)[:120]}")
    return out


def decontaminate_task(task, name, source="offline", action="drop", eval_names=None, log=print):
    """
    One training Task that does not come through chat_data (e.g. RL's prompts) checked against the evaluation
    sets: the task with its contaminating items dropped (action "drop"), and the one-line summary (logged).
    """
    import os
    from nanochat.common import get_base_dir
    from nanochat.report import get_report
    from nanochat.task_eval import DECONTAM_TASKS
    eval_sets = eval_fingerprints(eval_names or DECONTAM_TASKS, source, os.path.join(get_base_dir(), "decontam"), log=log)
    kept, report = decontaminate([(name, task)], eval_sets, action=action)
    summary = summarize(report)
    log(f"[data] {name} decontamination against {len(eval_sets)} eval sets: {summary}")
    get_report().log(f"Decontamination ({name})", [{"eval sets": [n for n, _ in eval_sets]}, report])
    if not kept:
        raise ValueError(f"decontamination dropped the whole training set {name}; use action 'drop' or 'report'")
    return kept[0][1], summary
