"""Benchmark: how much of an expert's skill survives BAR's averaging of shared tensors, by shared learning rate.

The BAR table (bench/bar_table.py) showed the merged model losing most of each expert's skill. This isolates
why: for each ``shared_lr_scale`` (the expert recipe's factor on the learning rate of embeddings, LM head and,
in RL, attention and norms), it trains ``math`` and ``tool_use`` experts from the tiny anchor and scores, on
each expert's own domain: the expert; the expert with its shared tensors replaced by the two experts' average
(what the merge gives it, routing aside); the expert with the anchor's shared tensors; and BAR (merge of the
two + router training). It also prints how far each expert moved its LM head (relative L2).

    .venv/bin/python bench/shared_drift.py --scales 1,0.05     # about 15 min per scale on 2 CPU cores
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bar_model.base import build_base  # noqa: E402
from bar_model.branch import init_anchor  # noqa: E402
from bar_model.evaluate import evaluate, load_model  # noqa: E402
from bar_model.expert import train_expert  # noqa: E402
from bar_model.freezing import part_of  # noqa: E402
from bar_model.merge import merge_experts  # noqa: E402
from bar_model.recipe import load_base_recipe, load_expert_recipe, load_router_recipe  # noqa: E402
from bar_model.router import train_router  # noqa: E402
from bench.report import machine_line, replace_section  # noqa: E402

DOMAINS = ["math", "tool_use"]


def with_shared(expert: Path, shared: dict[str, torch.Tensor], domain: str, n: int) -> float:
    model, tokenizer = load_model(expert)
    state = model.state_dict()
    with torch.no_grad():
        for key, value in shared.items():
            state[key].copy_(value)
    return evaluate(model, tokenizer, [domain], n=n)[domain]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / ".barfed" / "bench")
    parser.add_argument("--scales", default="1,0.05")
    parser.add_argument("--eval-n", type=int, default=200)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    base_recipe, recipe, router_recipe = (
        load_base_recipe("tiny"),
        load_expert_recipe("tiny"),
        load_router_recipe("tiny"),
    )
    work = args.work / base_recipe.name
    base, anchor = build_base(base_recipe, work, progress=False)
    branch = work / "anchor-2x"
    if not branch.exists():
        init_anchor(anchor, branch, base)
    anchor_state = load_model(branch)[0].state_dict()
    shared_keys = [k for k in anchor_state if part_of(k) in ("embeddings", "shared")]

    lines = []
    for scale in [float(s) for s in args.scales.split(",")]:
        scaled = recipe.model_copy(
            update={
                stage: getattr(recipe, stage).model_copy(update={"shared_lr_scale": scale}) for stage in ("sft", "rl")
            }
        )
        root = work / "shared-drift" / f"scale-{scale:g}"
        experts = {}
        for domain in DOMAINS:
            out = root / domain
            if not out.exists():
                train_expert(branch, domain, "mid,sft,rl", out, scaled, progress=False)
            experts[domain] = out
        states = {d: load_model(p)[0].state_dict() for d, p in experts.items()}
        average = {k: sum(s[k] for s in states.values()) / len(states) for k in shared_keys}
        anchor_shared = {k: anchor_state[k] for k in shared_keys}
        merged, bar = root / "merged", root / "bar"
        if not bar.exists():
            shutil.rmtree(merged, ignore_errors=True)
            merge_experts(branch, list(experts.values()), merged)
            train_router(merged, bar, router_recipe, progress=False)
            shutil.rmtree(merged, ignore_errors=True)
        bar_model, tokenizer = load_model(bar)
        bar_scores = evaluate(bar_model, tokenizer, DOMAINS, n=args.eval_n)
        for domain, path in experts.items():
            model, tokenizer = load_model(path)
            own = evaluate(model, tokenizer, [domain], n=args.eval_n)[domain]
            head = "lm_head.weight"
            drift = float((states[domain][head] - anchor_state[head]).norm() / anchor_state[head].norm())
            row = (
                f"| {scale:g} | {domain} | {drift:.2f} | {own:.1f} | "
                f"{with_shared(path, average, domain, args.eval_n):.1f} | "
                f"{with_shared(path, anchor_shared, domain, args.eval_n):.1f} | {bar_scores[domain]:.1f} |"
            )
            print(row, flush=True)
            lines.append(row)

    report = "\n".join(
        [
            f"Command: `.venv/bin/python bench/shared_drift.py --scales {args.scales}`  ",
            f"Machine: {machine_line()}. Own-domain held-out score (0-100), {args.eval_n} problems; experts from "
            "`expert-tiny` with `shared_lr_scale` set for SFT and RL; BAR = merge of the two + `router-tiny`.",
            "",
            "| shared_lr_scale | expert | LM head drift | expert | expert, averaged shared | "
            "expert, anchor's shared | BAR |",
            "|---|---|---|---|---|---|---|",
            *lines,
        ]
    )
    print(report)
    if not args.no_write:
        replace_section(
            ROOT / "docs" / "PERFORMANCE.md", "shared_drift", "Shared-tensor drift and the merge (issue 3)", report
        )


if __name__ == "__main__":
    main()
