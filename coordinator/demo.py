"""`barfed demo`: the whole pipeline on embedded defaults, on one machine, with no services.

Today: build the tiny base and anchor, branch it, train one expert through all three BAR stages,
and compare anchor and expert on every core domain. Every step is skipped when its output exists,
so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rich.console import Console

log = logging.getLogger(__name__)


def run_demo(home: Path, domain: str = "math", console: Console | None = None) -> dict[str, dict[str, float]]:
    from bar_model.base import build_base
    from bar_model.branch import init_anchor
    from bar_model.cli import CORE_DOMAINS, score_table
    from bar_model.evaluate import evaluate, load_model
    from bar_model.expert import train_expert
    from bar_model.recipe import load_base_recipe, load_expert_recipe

    console = console or Console()
    work = home / "demo"
    started = time.perf_counter()
    console.rule("1/4 tiny base and anchor")
    base, anchor = build_base(load_base_recipe("tiny"), work)
    console.rule("2/4 branch: 2-expert FlexOlmo anchor")
    branch = work / "anchor-2x"
    if not branch.exists():
        init_anchor(anchor, branch, base)
    console.rule(f"3/4 train the {domain} expert (mid, sft, rl)")
    expert = work / "experts" / domain
    if not expert.exists():
        train_expert(branch, domain, "mid,sft,rl", expert, load_expert_recipe("tiny"))
    console.rule("4/4 evaluate")
    recipe = load_expert_recipe("tiny")
    columns = {}
    for name, path in (("anchor", anchor), (f"{domain} expert", expert)):
        model, tokenizer = load_model(path)
        columns[name] = evaluate(model, tokenizer, list(CORE_DOMAINS), n=recipe.eval_examples)
    console.print(score_table(columns, title="held-out score (0-100)"))
    console.print(f"demo finished in {time.perf_counter() - started:.0f}s; files in {work}")
    return columns
