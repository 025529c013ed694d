"""Code: read a tiny program and say what it prints, or write an expression that hits a target.

Two task kinds, half each:

- trace: a few assignments with ``+ - *`` on small ints, then ``print(expr)``. The response lists each
  variable's value and ends ``Output: N`` (``a=3. b=7. Output: 14``); listing the values is a scratch
  pad a tiny model needs, and the scorer reads only the integer after the last ``Output:``.
- synthesis: "Write an expression using 3, 4 and 5 that equals 17." -> ``Expr: 3*4+5``. Any expression
  is accepted that uses exactly the given numbers once each (any order), only ``+ - *`` and parentheses,
  and evaluates to the target; it is checked with `restricted_eval`, never run as Python.
"""

from __future__ import annotations

import itertools
import random

from bar_model.domains.base import Domain, Example
from bar_model.domains.math import int_after_last
from bar_model.domains.registry import register
from bar_model.domains.restricted_eval import RestrictedEvalError, evaluate, int_literals

MAX_VALUE = 300  # bound on every value a program computes and every synthesis target
_VARS = "abcd"


def _trace_task(rng: random.Random) -> tuple[str, str, str]:
    """A straight-line program; every value stays in 0..MAX_VALUE so no step is out of reach."""
    while True:
        n_assign = rng.randint(2, 4)
        values: dict[str, int] = {}
        lines, trace = [], []
        for var in _VARS[:n_assign]:
            if not values:
                values[var] = rng.randint(1, 20)
                lines.append(f"{var} = {values[var]}")
            else:
                src = rng.choice(list(values))
                op = rng.choice("+-*")
                candidates = [v for v in values if not (op == "-" and v == src)]  # no degenerate a - a
                other = rng.choice([*candidates, str(rng.randint(1, 12 if op != "*" else 5))])
                other_val = values[other] if other in values else int(other)
                values[var] = _apply(op, values[src], other_val)
                lines.append(f"{var} = {src} {op} {other}")
            trace.append(f"{var}={values[var]}.")
        names = list(values)
        left, op = rng.choice(names), rng.choice("+-*")
        candidates = [v for v in names if not (op == "-" and v == left)]
        right = rng.choice([*candidates, str(rng.randint(1, 9))])
        right_val = values[right] if right in values else int(right)
        out = _apply(op, values[left], right_val)
        if all(0 <= v <= MAX_VALUE for v in [*values.values(), out]):
            break
    prompt = "What does this program print?\n" + "\n".join([*lines, f"print({left} {op} {right})"])
    return prompt, " ".join([*trace, f"Output: {out}"]), str(out)


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


# Shapes tried, in this order, to find the canonical reference for a synthesis prompt.
_SHAPES = ("{a}{o1}{b}{o2}{c}", "({a}{o1}{b}){o2}{c}", "{a}{o1}({b}{o2}{c})")


def _reference_expression(nums: tuple[int, int, int], target: int) -> str | None:
    """The first expression (fixed search order, numbers in the order given) that hits ``target``.

    Deterministic per prompt, so SFT never sees two different answers to the same question.
    """
    a, b, c = nums
    for shape in _SHAPES:
        for o1, o2 in itertools.product("+-*", repeat=2):
            text = shape.format(a=a, b=b, c=c, o1=o1, o2=o2)
            if evaluate(text) == target:
                return text
    return None


def _synthesis_task(rng: random.Random) -> tuple[str, str, str]:
    while True:
        nums = (rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9))
        shape = rng.choice(_SHAPES)
        text = shape.format(a=nums[0], b=nums[1], c=nums[2], o1=rng.choice("+-*"), o2=rng.choice("+-*"))
        target = evaluate(text)
        if 0 <= target <= MAX_VALUE:
            break
    reference = _reference_expression(nums, target)
    assert reference is not None  # the drawn expression itself is in the search space
    a, b, c = nums
    prompt = f"Write an expression using {a}, {b} and {c} that equals {target}."
    return prompt, f"Expr: {reference}", f"{a},{b},{c}={target}"


def expression_solves(completion: str, numbers: list[int], target: int) -> bool:
    """Whether the line after the last ``Expr:`` uses exactly ``numbers`` and evaluates to ``target``."""
    if not isinstance(completion, str):
        return False
    at = completion.rfind("Expr:")
    if at < 0:
        return False
    expr = completion[at + len("Expr:") :].split("\n", 1)[0].strip().removesuffix(".")
    try:
        return evaluate(expr) == target and sorted(int_literals(expr)) == sorted(numbers)
    except RestrictedEvalError:
        return False


class CodeDomain(Domain):
    """Program tracing and expression synthesis over small integers."""

    name = "code"
    description = "Predict what a tiny program prints ('Output: N'), or write an expression ('Expr: ...')."
    max_new_tokens = 48

    def sample(self, rng: random.Random) -> Example:
        task = _trace_task if rng.random() < 0.5 else _synthesis_task
        return Example(*task(rng))

    def score(self, example: Example, completion: str) -> float:
        if "=" in example.answer:  # synthesis: "a,b,c=target"
            nums, target = example.answer.split("=")
            ok = expression_solves(completion, [int(n) for n in nums.split(",")], int(target))
            return 1.0 if ok else 0.0
        got = int_after_last(completion, "Output:")
        return 1.0 if got is not None and str(got) == example.answer else 0.0


register(CodeDomain())
