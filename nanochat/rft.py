"""
Rejection-sampling fine-tuning (RFT, Yuan et al., arXiv 2308.01825): which sampled reasoning paths to keep.

The recipe: sample k reasoning paths per training question from an SFT model (temperature 0.7, calculator
tool OFF so that the model writes its own arithmetic), keep the correct ones, remove near-duplicates, and
fine-tune again on the original SFT data plus the kept paths. This file is the selection logic only; the
sampling and retraining are scripts/chat_rft.py (over the shared engine and SFT loop).

A path is kept when (`check_path`)
  1) its final answer (`#### N`) equals the reference answer, and
  2) every equation in it is arithmetically true: each `<<lhs=rhs>>` annotation or python call + output pair
     is checked with the safe calculator (nanochat/calculator.py, never eval), and a tool call the model left
     without an output makes the path malformed.
Distinct paths (`select_paths`, the paper's Algorithm 1, §3.3): two paths are "the same reasoning" when
they have the same list of equations (spaces removed, in order; every equation-free path shares the empty
key). Among paths sharing an equation list we keep ONE: the one with the largest summed character
Levenshtein distance to the other kept paths, i.e. the wording that adds the most diversity.
Multi-source pooling (the paper's "RFT U13B"/union): paths of several models are simply concatenated
(`pool_paths`) before the selection, so the union keeps every distinct equation list any model found.

    from nanochat.rft import check_path, select_paths
    ok, why = check_path(completion, answer="42")
    kept = select_paths([p for p in paths if check_path(p["text"], answer)[0]])

Run the tests with `python -m pytest tests/test_rft.py -q`.
"""
from nanochat.calculator import format_result, safe_eval
from tasks.verify import extract_answer, extract_equations, normalize_number

# -----------------------------------------------------------------------------
# 1) is a path right? (answer and every equation)


def equation_is_true(lhs, rhs):
    """
    True when `lhs` evaluates (safe calculator) to the number written as `rhs`. The rhs may be written the
    way the calculator prints it ("10/3" -> "3.333333") or more exactly ("3.3333333"): equal within 1e-6.
    """
    value = safe_eval(lhs)
    written = normalize_number(rhs)
    if value is None or written is None:
        return False
    if normalize_number(format_result(value)) == written:
        return True
    return abs(float(written) - value) <= 1e-6 * max(1.0, abs(value))


def check_path(completion, answer):
    """
    (ok, reason) for one sampled path. `completion` is the assistant turn as text (tool calls as their
    special tokens) or as parts; `answer` is the reference answer. reason is "ok", "wrong answer",
    "no answer", "unanswered tool call" or "false equation: lhs=rhs".
    """
    text = completion if isinstance(completion, str) else "".join(p["text"] for p in completion if p["type"] == "text")
    got = extract_answer(text)
    if got is None:
        return False, "no answer"
    if got != normalize_number(answer):
        return False, "wrong answer"
    equations = extract_equations(completion)
    if isinstance(completion, list) and sum(p["type"] == "python" for p in completion) != len(equations):
        return False, "unanswered tool call"
    for lhs, rhs in equations:
        if not equation_is_true(lhs, rhs):
            return False, f"false equation: {lhs}={rhs}"
    return True, "ok"


# -----------------------------------------------------------------------------
# 2) which distinct paths to keep


def equation_key(completion):
    """The deduplication key of a path: its equations as 'lhs=rhs' strings, spaces removed, in order."""
    return tuple(f"{lhs}={rhs}".replace(" ", "") for lhs, rhs in extract_equations(completion))


def levenshtein(a, b):
    """Character edit distance (insertions, deletions, substitutions cost 1): the two-row dynamic program."""
    if len(a) < len(b):
        a, b = b, a  # the inner loop runs over the shorter string
    previous = list(range(len(b) + 1))  # distances from a[:0] to every prefix of b
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def select_paths(paths, key=None, text=None, distance=levenshtein):
    """
    The paper's Algorithm 1 over correct paths, in the order given. `paths` are dicts with "text" (what the
    distance compares) and optionally "key" (default: equation_key of the text); `key`/`text` override how
    they are read. A path with a new key is kept; a path whose key is already kept replaces the kept one
    when its summed distance to the OTHER kept paths is larger (ties keep the earlier path). Returns the kept
    paths, in the order their keys were first seen.
    """
    key = key or (lambda p: p["key"] if "key" in p else equation_key(p["text"]))
    text = text or (lambda p: p["text"])
    cache = {}

    def dist(x, y):
        if x == y:
            return 0
        pair = (x, y) if x < y else (y, x)
        if pair not in cache:
            cache[pair] = distance(x, y)
        return cache[pair]

    kept = {}  # key -> path; dicts keep insertion order
    for path in paths:
        k = key(path)
        if k not in kept:
            kept[k] = path
            continue
        incumbent = kept[k]
        if text(path) == text(incumbent):
            continue
        others = [text(p) for kk, p in kept.items() if kk != k]
        if sum(dist(text(path), o) for o in others) > sum(dist(text(incumbent), o) for o in others):
            kept[k] = path
    return list(kept.values())


# -----------------------------------------------------------------------------
# 3) several models' paths together


def pool_paths(paths_by_source):
    """{source: [path, ...]} -> one list, each path tagged with its "source" (the union, before selection)."""
    pooled = []
    for source, paths in paths_by_source.items():
        pooled.extend(dict(p, source=source) for p in paths)
    return pooled


def distinct_equation_lists(paths):
    """How many different equation lists the correct paths of one question have (the paper's diversity)."""
    return len({p["key"] if "key" in p else equation_key(p["text"]) for p in paths})
