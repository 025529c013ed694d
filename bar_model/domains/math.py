"""Math: multi-step arithmetic and word problems with small numbers, solved step by step.

Every response is a short worked solution, one ``x op y = z.`` step per operation, ending in
``Answer: N``. Showing each step keeps every single step within reach of a tiny model; operands are
single digits (word problems go up to 20) and every intermediate result stays in 0-100, so no step needs
more than a small table. Mid-training text adds drills of those tables, as a textbook would.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from bar_model.domains.base import Domain, Example
from bar_model.domains.registry import register

MAX_VALUE = 100  # no intermediate result above this (and none below zero)
_INT = re.compile(r"-?\d{1,12}")

NAMES = ["Tom", "Ana", "Sam", "Mia", "Leo", "Eva", "Max", "Zoe", "Ben", "Ivy"]
ITEMS = ["apples", "pens", "cards", "eggs", "books", "coins", "shells", "stickers", "marbles", "cookies"]


def int_after_last(text: str, marker: str) -> int | None:
    """The integer right after the last ``marker`` in ``text`` (rest of that line, a final '.' allowed).

    Returns None unless that line holds exactly one integer: a number elsewhere in the text, or one
    followed by words, does not count as an answer.
    """
    if not isinstance(text, str):
        return None
    at = text.rfind(marker)
    if at < 0:
        return None
    line = text[at + len(marker) :].split("\n", 1)[0].strip()
    line = line.removesuffix(".").rstrip()
    if not _INT.fullmatch(line):
        return None
    return int(line)


# -- expressions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """A binary expression tree: a leaf holds ``value`` only."""

    value: int
    op: str = ""
    left: _Node | None = None
    right: _Node | None = None


_PREC = {"+": 1, "-": 1, "*": 2}


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _random_tree(rng: random.Random, n_ops: int) -> _Node:
    if n_ops == 0:
        return _Node(rng.randint(1, 9))
    n_left = rng.randint(0, n_ops - 1)
    left, right = _random_tree(rng, n_left), _random_tree(rng, n_ops - 1 - n_left)
    op = rng.choice("+-*")
    return _Node(_apply(op, left.value, right.value), op, left, right)


def _render(node: _Node) -> str:
    """Infix text with only the parentheses needed (ties on the right are bracketed, so a-(b-c) stays)."""
    if not node.op:
        return str(node.value)
    assert node.left is not None and node.right is not None
    left, right = _render(node.left), _render(node.right)
    if node.left.op and _PREC[node.left.op] < _PREC[node.op]:
        left = f"({left})"
    if node.right.op and _PREC[node.right.op] <= _PREC[node.op]:
        right = f"({right})"
    return f"{left}{node.op}{right}"


def _steps(node: _Node, out: list[str]) -> None:
    """Post-order steps, which is the order a person evaluates the rendered text in."""
    if not node.op:
        return
    assert node.left is not None and node.right is not None
    _steps(node.left, out)
    _steps(node.right, out)
    out.append(f"{node.left.value}{node.op}{node.right.value}={node.value}.")


def _in_range(node: _Node) -> bool:
    if not node.op:
        return True
    assert node.left is not None and node.right is not None
    return 0 <= node.value <= MAX_VALUE and _in_range(node.left) and _in_range(node.right)


def _solution(steps: list[str], answer: int) -> str:
    return " ".join([*steps, f"Answer: {answer}"])


# -- word problems -----------------------------------------------------------------------------


def _word_problem(rng: random.Random) -> tuple[str, list[str], int]:
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(5)
    if kind == 0:
        a, b, c = rng.randint(2, 20), rng.randint(2, 9), rng.randint(2, 9)
        x = b * c
        r = a + x
        prompt = f"{name} has {a} {items} and buys {b} bags of {c} {items}. How many {items} does {name} have?"
        return prompt, [f"{b}*{c}={x}.", f"{a}+{x}={r}."], r
    if kind == 1:
        a = rng.randint(5, 20)
        b, c = rng.randint(1, a), rng.randint(2, 20)
        x = a - b
        r = x + c
        prompt = f"{name} has {a} {items}, gives away {b}, then finds {c} more. How many {items} now?"
        return prompt, [f"{a}-{b}={x}.", f"{x}+{c}={r}."], r
    if kind == 2:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        x = a * b
        c = rng.randint(1, min(20, x))
        r = x - c
        prompt = f"{name} fills {a} boxes with {b} {items} each, then loses {c}. How many {items} are left?"
        return prompt, [f"{a}*{b}={x}.", f"{x}-{c}={r}."], r
    if kind == 3:
        a, b, c, d = rng.randint(2, 6), rng.randint(2, 6), rng.randint(2, 6), rng.randint(2, 6)
        x, y = a * b, c * d
        r = x + y
        prompt = f"{name} buys {a} packs of {b} {items} and {c} packs of {d} {items}. How many {items} in all?"
        return prompt, [f"{a}*{b}={x}.", f"{c}*{d}={y}.", f"{x}+{y}={r}."], r
    b, x = rng.randint(2, 10), rng.randint(1, 10)
    t, c = b * x, rng.randint(2, b)
    r = x * c
    prompt = f"{name} splits {t} {items} into {b} equal groups and takes {c} groups. How many {items} is that?"
    return prompt, [f"{t}/{b}={x}.", f"{x}*{c}={r}."], r


class MathDomain(Domain):
    """Arithmetic with a visible chain of small steps and a final ``Answer: N``."""

    name = "math"
    description = "Multi-step arithmetic and word problems with small numbers; answer after 'Answer:'."
    max_new_tokens = 64

    def sample(self, rng: random.Random) -> Example:
        if rng.random() < 0.5:
            prompt, steps, answer = _word_problem(rng)
        else:
            while True:
                tree = _random_tree(rng, rng.choice((2, 2, 3)))
                if _in_range(tree):
                    break
            steps = []
            _steps(tree, steps)
            prompt, answer = f"Compute {_render(tree)}.", tree.value
        return Example(prompt, _solution(steps, answer), str(answer))

    def document(self, rng: random.Random) -> str:
        """Half the time a drill of single-step facts, else a worked problem."""
        if rng.random() < 0.5:
            return super().document(rng)
        facts = []
        for _ in range(rng.randint(6, 10)):
            op = rng.choice("+-*")
            a, b = rng.randint(1, 9), rng.randint(1, 9) if op != "+" else rng.randint(1, 20)
            if op == "-" and b > a:
                a, b = b, a
            facts.append(f"{a}{op}{b}={_apply(op, a, b)}.")
        return "Arithmetic facts: " + " ".join(facts)

    def score(self, example: Example, completion: str) -> float:
        got = int_after_last(completion, "Answer:")
        return 1.0 if got is not None and str(got) == example.answer else 0.0

    def reward(self, example: Example, completion: str) -> float:
        """A little credit (0.1) for a well-formed final answer, so RL finds the format first."""
        if self.score(example, completion) == 1.0:
            return 1.0
        return 0.1 if int_after_last(completion, "Answer:") is not None else 0.0


register(MathDomain())
