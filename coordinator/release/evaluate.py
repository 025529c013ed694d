"""Evaluation of a built release on every domain it serves, and on general data.

Each domain is scored twice where it can be: on the coordinator's own held-out problems (the federation's
truth, which no organization chooses) and on the ``eval.jsonl`` set the expert's package carries (the
organization's own view). A domain the coordinator has no scorer for gets no score (None): it is listed, not
judged.
"""

from __future__ import annotations

import json
from pathlib import Path

from bar_model.domains import Example, domain_names, get_domain
from bar_model.evaluate import load_model, score_examples
from protocol.package import EVAL_FILE


def package_eval_set(package: Path, domain: str) -> list[Example]:
    path = package / EVAL_FILE
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Example(r["prompt"], r["response"], r["answer"], domain) for r in rows]


def score_domain(model, tokenizer, domain: str, package: Path | None, examples: int) -> tuple[float | None, ...]:
    """(held-out score, package score) of one model on one domain; None where there is nothing to score with."""
    if domain not in set(domain_names()):
        return None, None
    held_out = score_examples(model, tokenizer, domain, get_domain(domain).eval_set(examples))
    own = package_eval_set(package, domain) if package is not None else []
    return held_out, (score_examples(model, tokenizer, domain, own) if own else None)


def evaluate_release(model_dir: Path, packages: dict[str, Path], examples: int, parent: dict | None) -> dict:
    """domain -> {score, package_score, parent, delta}; ``general`` stands for the anchor's slot."""
    model, tokenizer = load_model(model_dir)
    table: dict[str, dict] = {}
    for domain in [*sorted(packages), "general"]:
        held_out, package_score = score_domain(model, tokenizer, domain, packages.get(domain), examples)
        before = ((parent or {}).get(domain) or {}).get("score")
        delta = round(held_out - before, 1) if held_out is not None and before is not None else None
        table[domain] = {"score": held_out, "package_score": package_score, "parent": before, "delta": delta}
    return table
