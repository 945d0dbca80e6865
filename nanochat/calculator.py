"""
A safe calculator for the model's tool calls: `<|python_start|>12*3<|python_end|>` -> "36".

The expression is parsed with ast.parse(mode="eval") and walked by a tiny interpreter that knows only an
allow-list of node types; nothing is ever handed to eval/exec, so there is no route to names, attributes,
imports or dunder tricks. Allowed:
    numbers (int, float; bool is not a number here), + - * / // %, unary - and +, parentheses,
    and  "string literal".count("string literal")  (letter counting, e.g. "strawberry".count("r")).
Refused (-> None): everything else, notably ** (9**9**9 would never finish), names, calls, attributes,
subscripts, comprehensions, strings as operands ('a'*10**9).

Cost is bounded by the caps below, not by timeouts: the input is at most MAX_EXPR_CHARS, every literal and
every intermediate result must stay within MAX_MAGNITUDE, and the nesting depth is capped, so every operation
is on small numbers and the walk is linear in the input. That makes it thread-safe (no signals, no global
state) and fast (microseconds) for any input.

Output formatting (format_result / calculate): ints print as ints; floats that are whole numbers print as
ints ("12/4" -> "3"); other floats are rounded to 6 decimal places with trailing zeros stripped
("10/3" -> "3.333333"), and tiny nonzero floats that would round to 0 use 6 significant digits ("1e-9").

Usage:
    from nanochat.calculator import safe_eval, calculate
    safe_eval("(3 + 4) * 2")          # 14
    safe_eval("__import__('os')")     # None
    calculate("10/4")                 # "2.5"
"""
import ast
import math
import operator
import re

MAX_EXPR_CHARS = 1000  # longer inputs are refused outright
MAX_MAGNITUDE = 10**18  # cap on every literal and every intermediate result
MAX_DEPTH = 64  # cap on AST nesting
MAX_RESULT_CHARS = 32  # cap on the formatted result injected into the model's context

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARYOPS = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class _Refused(Exception):
    """Raised inside the walk for anything outside the allow-list; safe_eval turns it into None."""


# -----------------------------------------------------------------------------
# the interpreter


def _check_number(x):
    # bool is an int subclass; True+True is not arithmetic the model should be doing
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise _Refused("not a number")
    if isinstance(x, float) and not math.isfinite(x):
        raise _Refused("non-finite float")
    if abs(x) > MAX_MAGNITUDE:
        raise _Refused("magnitude cap")
    return x


def _string_literal(node):
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        raise _Refused("count() needs string literals")
    return node.value


def _walk(node, depth):
    if depth > MAX_DEPTH:
        raise _Refused("too deep")
    if isinstance(node, ast.Constant):
        return _check_number(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left = _walk(node.left, depth + 1)
        right = _walk(node.right, depth + 1)
        return _check_number(_BINOPS[type(node.op)](left, right))  # ZeroDivisionError is caught by safe_eval
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARYOPS:
        return _check_number(_UNARYOPS[type(node.op)](_walk(node.operand, depth + 1)))
    if isinstance(node, ast.Call):
        # exactly  "literal".count("literal")  and nothing else
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "count" and len(node.args) == 1
                and not node.keywords):
            return _string_literal(func.value).count(_string_literal(node.args[0]))
    raise _Refused(type(node).__name__)


def _normalize(expr):
    expr = expr.strip()
    # Digit-grouping commas ("1,200*3") are common in GSM8K-style text; drop them when there are no string
    # literals around that could legitimately contain commas.
    if "'" not in expr and '"' not in expr:
        expr = re.sub(r"(?<=\d),(?=\d)", "", expr)
    return expr


def safe_eval(expr):
    """Value of an allow-listed arithmetic expression (int or float), or None if refused or invalid."""
    if not isinstance(expr, str) or len(expr) > MAX_EXPR_CHARS:
        return None
    try:
        tree = ast.parse(_normalize(expr), mode="eval")
        return _walk(tree.body, 0)
    except (_Refused, SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError,
            RecursionError, MemoryError):
        return None


# -----------------------------------------------------------------------------
# formatting for injection into the model's context


def format_result(value):
    """The text the engine injects for a value (see the module docstring for the rounding rules)."""
    if isinstance(value, int):
        text = str(value)
    elif value.is_integer():
        text = str(int(value))
    else:
        rounded = round(value, 6)
        text = f"{value:.6g}" if rounded == 0 else f"{rounded:.6f}".rstrip("0").rstrip(".")
    return text if len(text) <= MAX_RESULT_CHARS else None


def calculate(expr):
    """safe_eval + format_result: the result text to inject, or None (inject nothing)."""
    value = safe_eval(expr)
    return None if value is None else format_result(value)
