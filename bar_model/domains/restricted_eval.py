"""Evaluate integer arithmetic written by a model, without ever running it as Python.

The code domain asks models to write expressions such as ``3*4+5``. Their output is untrusted, so it
is parsed with ``ast`` and walked by hand: only int literals, ``+ - *``, unary minus and parentheses
are accepted; anything else (names, calls, attributes, ``**``, strings, floats, huge numbers, deep
nesting, long input) raises `RestrictedEvalError`. ``eval``/``exec``/``compile`` are never used.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable

MAX_CHARS = 200  # longer input is refused before parsing
MAX_INT = 10**6  # bound on every literal and every intermediate result
MAX_DEPTH = 100  # bound on syntax-tree depth (a flat 200-character sum is about 100 deep)
_ALLOWED_CHARS = frozenset("0123456789+-*() \t")  # decimal ints only: no 0x10, 1_000, 1e3, names

_BINOPS: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}


class RestrictedEvalError(ValueError):
    """The text is not a small integer expression made of + - * and parentheses."""


def _parse(expr: str) -> ast.expr:
    if not isinstance(expr, str):
        raise RestrictedEvalError("expression must be a string")
    if len(expr) > MAX_CHARS:
        raise RestrictedEvalError(f"expression longer than {MAX_CHARS} characters")
    bad = set(expr) - _ALLOWED_CHARS
    if bad:
        raise RestrictedEvalError(f"disallowed characters: {''.join(sorted(bad))[:20]!r}")
    if not expr.strip():
        raise RestrictedEvalError("empty expression")
    try:
        return ast.parse(expr.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise RestrictedEvalError(f"not a valid expression: {type(exc).__name__}") from None


def _check_int(value: int) -> int:
    if abs(value) > MAX_INT:
        raise RestrictedEvalError(f"number larger than {MAX_INT}")
    return value


def _walk(node: ast.expr, depth: int, literals: list[int]) -> int:
    if depth > MAX_DEPTH:
        raise RestrictedEvalError("expression nested too deeply")
    if isinstance(node, ast.Constant):
        # bool is a subclass of int; the character allow-list already excludes True/False.
        if type(node.value) is not int:
            raise RestrictedEvalError("only integer literals are allowed")
        literals.append(_check_int(node.value))
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left = _walk(node.left, depth + 1, literals)
        right = _walk(node.right, depth + 1, literals)
        return _check_int(_BINOPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_walk(node.operand, depth + 1, literals)
    raise RestrictedEvalError(f"{type(node).__name__} is not allowed")


def _run(expr: str) -> tuple[int, list[int]]:
    literals: list[int] = []
    try:
        value = _walk(_parse(expr), 0, literals)
    except RecursionError:
        raise RestrictedEvalError("expression nested too deeply") from None
    return value, literals


def evaluate(expr: str) -> int:
    """The value of ``expr``; raises `RestrictedEvalError` for anything but small integer arithmetic."""
    return _run(expr)[0]


def int_literals(expr: str) -> list[int]:
    """The integer literals of ``expr`` in source order (``-3`` is literal 3); validates like `evaluate`."""
    return _run(expr)[1]
