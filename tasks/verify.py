"""
Verifiers shared by the tasks: numeric normalization, GSM8K-style solutions (`<<expr=result>>` calculator
annotations, `#### N` answers) and their conversion to tool-call parts, and stripping of thinking spans.

Used by tasks/gsm8k.py, tasks/synthmath.py, tasks/spelling.py, tasks/synthif.py and, through them, by RL
(rewards), RFT (`extract_answer`, `extract_equations`) and CFT (`split_steps` / `join_steps`).

    python -m pytest tests/test_tasks_verify.py -q
"""
import re
from decimal import Decimal, InvalidOperation, localcontext

# -----------------------------------------------------------------------------
# numbers

_NUMBER = r"-?\$?\s*-?[0-9][0-9,]*(?:\.[0-9]+)?|-?\$?\s*-?\.[0-9]+"


def normalize_number(text):
    """
    A canonical string for a number written the way people and models write them, or None if it is not one:
    "$1,000.50" -> "1000.5", "10.0" -> "10", "18." -> "18", "-0" -> "0", " 7 " -> "7", "50%" -> "50".
    Exact (Decimal, no floats), so "0.1" and "0.10" agree and 10**30 stays exact.
    """
    if text is None:
        return None
    s = str(text).strip().rstrip(".").replace(",", "").replace("$", "").replace(" ", "").rstrip("%")
    if s.startswith("+"):
        s = s[1:]
    if not re.fullmatch(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", s):
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if d == 0:
        return "0"
    with localcontext() as ctx:  # enough digits for any input: the default 28 raises or rounds on long numbers
        ctx.prec = len(s) + 2
        if d == d.to_integral_value():
            return str(d.quantize(Decimal(1)))
        return format(d.normalize(), "f")


def numbers_equal(a, b):
    """True when both parse as numbers and are equal after normalization."""
    na, nb = normalize_number(a), normalize_number(b)
    return na is not None and na == nb


# -----------------------------------------------------------------------------
# thinking and tool spans in completions

THINK_RE = re.compile(r"<\|think_start\|>.*?(?:<\|think_end\|>|$)", re.DOTALL)
PYTHON_RE = re.compile(r"<\|python_start\|>(.*?)<\|python_end\|>", re.DOTALL)
OUTPUT_RE = re.compile(r"<\|output_start\|>(.*?)<\|output_end\|>", re.DOTALL)


def strip_thinking(completion):
    """
    The completion without its thinking: think parts are dropped from a list of parts; in a string every
    `<|think_start|>...<|think_end|>` span goes, and an unterminated think span runs to the end (the model never
    stopped thinking, so nothing after it counts as an answer).
    """
    if isinstance(completion, list):
        return "".join(p["text"] if p["type"] == "text" else _tool_text(p) for p in completion if p["type"] != "think")
    return THINK_RE.sub("", completion)


def _tool_text(part):
    tags = {"python": ("<|python_start|>", "<|python_end|>"), "python_output": ("<|output_start|>", "<|output_end|>")}
    start, end = tags[part["type"]]
    return f"{start}{part['text']}{end}"


def visible_text(completion):
    """What a user would read: no thinking, no tool calls, no tool outputs (used by the constraint checks)."""
    text = strip_thinking(completion)
    text = PYTHON_RE.sub("", text)
    return OUTPUT_RE.sub("", text)


def used_tool(completion):
    """Did the completion call the python tool at least once?"""
    if isinstance(completion, list):
        return any(p["type"] == "python" for p in completion)
    return bool(PYTHON_RE.search(completion))


# -----------------------------------------------------------------------------
# GSM8K-style solutions: "... = <<16-3-4=9>>9 eggs.\n ... #### 18"

ANSWER_RE = re.compile(r"####\s*(" + _NUMBER + r")")
ANNOTATION_RE = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
EQUATION_RE = re.compile(
    r"<<([^<>=]*)=([^<>]*)>>|<\|python_start\|>(.*?)<\|python_end\|>\s*<\|output_start\|>(.*?)<\|output_end\|>", re.DOTALL
)


def extract_answer(completion):
    """The normalized number after the LAST `#### ` outside thinking (a model may revise itself), else None."""
    matches = ANSWER_RE.findall(strip_thinking(completion))
    return normalize_number(matches[-1]) if matches else None


def extract_equations(completion):
    """
    The calculator steps of a solution as (expression, result) string pairs, in order. Understands both
    written forms: `<<a*b=c>>` annotations, and python tool calls followed by their output
    (`<|python_start|>a*b<|python_end|><|output_start|>c<|output_end|>`, or the same as parts).
    """
    if isinstance(completion, list):
        pairs, pending = [], None
        for part in completion:
            if part["type"] == "python":
                pending = part["text"].strip()
            elif part["type"] == "python_output" and pending is not None:
                pairs.append((pending, part["text"].strip()))
                pending = None
        return pairs
    pairs = []
    for m in EQUATION_RE.finditer(completion):  # one pass over both forms keeps them in order
        expr, result = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
        pairs.append((expr.strip(), result.strip()))
    return pairs


def annotations_to_parts(solution):
    """
    A GSM8K solution as assistant parts: text up to each `<<expr=result>>`, a python part `expr`, a
    python_output part `result`, then the text goes on (GSM8K repeats the result after the annotation, and so
    do we: the model learns to copy the tool's output into its prose). The final `#### N` stays in the text.
    """
    parts, pos = [], 0
    for m in ANNOTATION_RE.finditer(solution):
        if m.start() > pos:
            parts.append({"type": "text", "text": solution[pos : m.start()]})
        parts.append({"type": "python", "text": m.group(1).strip()})
        parts.append({"type": "python_output", "text": m.group(2).strip()})
        pos = m.end()
    if pos < len(solution):
        parts.append({"type": "text", "text": solution[pos:]})
    return parts


def strip_annotations(solution):
    """The solution as plain prose: `<<...>>` annotations removed (what a thinking span or a reader sees)."""
    return ANNOTATION_RE.sub("", solution)


def split_steps(solution):
    """
    A solution as structured steps for CFT-style corruption: (steps, answer) where each step is
    {"line": str, "equations": [(expr, result), ...]} for each non-empty line before the final `#### N`.
    `join_steps(steps, answer)` inverts it.
    """
    lines = [line for line in solution.split("\n") if line.strip()]
    answer = None
    if lines and ANSWER_RE.search(lines[-1]):
        answer = normalize_number(ANSWER_RE.findall(lines[-1])[-1])
        lines = lines[:-1]
    steps = [{"line": line, "equations": extract_equations(line)} for line in lines]
    return steps, answer


def join_steps(steps, answer):
    """The inverse of split_steps: the lines, then `#### answer`."""
    return "\n".join([s["line"] for s in steps] + [f"#### {answer}"])
