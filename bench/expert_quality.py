"""Benchmark: how much one BAR expert gains on its domain, at what cost in wall time.

Trains ``math`` and ``tool_use`` experts from the tiny anchor through mid-training, SFT and GRPO, and
prints per expert: anchor vs expert on its own domain, its scores on the other core domains, and wall
time per stage. Target (issue 2): each expert in <= 6 min on 2 CPU cores, >= +20 points on its own
domain over the anchor. The anchor, evaluated in the same run, is the baseline.

    .venv/bin/python bench/expert_quality.py            # writes docs/PERFORMANCE.md's section too
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bar_model.base import build_base, build_summary  # noqa: E402
from bar_model.branch import init_anchor  # noqa: E402
from bar_model.domains import CORE_DOMAINS  # noqa: E402
from bar_model.evaluate import evaluate, load_model  # noqa: E402
from bar_model.expert import expert_card, train_expert  # noqa: E402
from bar_model.recipe import load_base_recipe, load_expert_recipe  # noqa: E402
from bench.report import machine_line, replace_section  # noqa: E402

TIME_TARGET_S = 6 * 60
GAIN_TARGET = 20.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / ".barfed" / "bench")
    parser.add_argument("--base-recipe", default="tiny")
    parser.add_argument("--expert-recipe", default="tiny")
    parser.add_argument("--domains", default="math,tool_use")
    parser.add_argument("--eval-n", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/PERFORMANCE.md")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="evaluate experts already trained with this recipe (e.g. by bench/bar_table.py); their time is the "
        "sum of the stage wall times their card recorded",
    )
    args = parser.parse_args()

    base_recipe, recipe = load_base_recipe(args.base_recipe), load_expert_recipe(args.expert_recipe)
    work = args.work / base_recipe.name
    base, anchor = build_base(base_recipe, work, progress=False)
    pretrain_s = build_summary(base)["summary"]["wall_s"]
    anchor_sft_s = build_summary(anchor)["summary"]["wall_s"]
    branch = work / "anchor-2x"
    if not branch.exists():
        init_anchor(anchor, branch, base)

    model, tokenizer = load_model(anchor)
    anchor_scores = evaluate(model, tokenizer, list(CORE_DOMAINS), n=args.eval_n)
    rows = []
    notes: list[str] = []
    for domain in [d.strip() for d in args.domains.split(",")]:
        out = work / "experts" / domain
        reused = args.reuse and out.exists() and expert_card(out)["recipe"] == recipe.model_dump()
        if not reused:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(out.parent / f".{domain}.partial", ignore_errors=True)
            t0 = time.perf_counter()
            train_expert(branch, domain, "mid,sft,rl", out, recipe, progress=False)
            total_s = time.perf_counter() - t0
        stages = {s: v["wall_s"] for s, v in expert_card(out)["stage_summaries"].items()}
        if reused:
            total_s = sum(stages.values())
            notes.append(
                f"The {domain} expert was reused (trained earlier with the same recipe); its total is the "
                "sum of the stage wall times on its card."
            )
        model, tokenizer = load_model(out)
        scores = evaluate(model, tokenizer, list(CORE_DOMAINS), n=args.eval_n)
        gain = scores[domain] - anchor_scores[domain]
        met = total_s <= TIME_TARGET_S and gain >= GAIN_TARGET
        rows.append((domain, scores, stages, total_s, gain, met))

    lines = [
        f"Command: `.venv/bin/python bench/expert_quality.py --base-recipe {args.base_recipe} "
        f"--expert-recipe {args.expert_recipe} --eval-n {args.eval_n}{' --reuse' if args.reuse else ''}`  ",
        f"Machine: {machine_line()}. Building the tiny base took {pretrain_s:.0f} s of pretraining and "
        f"{anchor_sft_s:.0f} s of general SFT for the anchor (reused between runs).",
        "",
        f"Held-out score (0-100, {args.eval_n} problems per domain). Baseline: the anchor, same run.",
        "",
        "| checkpoint | "
        + " | ".join(CORE_DOMAINS)
        + " | mid s | sft s | rl s | total s | own-domain gain | target met |",
        "|---|" + "---|" * (len(CORE_DOMAINS) + 6),
        "| anchor | " + " | ".join(f"{anchor_scores[d]:.1f}" for d in CORE_DOMAINS) + " | | | | | | |",
    ]
    for domain, scores, stages, total_s, gain, met in rows:
        cells = " | ".join(f"**{scores[d]:.1f}**" if d == domain else f"{scores[d]:.1f}" for d in CORE_DOMAINS)
        lines.append(
            f"| {domain} expert | {cells} | {stages.get('mid', 0):.0f} | {stages.get('sft', 0):.0f} | "
            f"{stages.get('rl', 0):.0f} | {total_s:.0f} | {gain:+.1f} | {'yes' if met else 'NO'} |"
        )
    lines.append("")
    lines.append(
        f"Target: each expert in <= {TIME_TARGET_S // 60} min wall time (all three stages) and "
        f">= +{GAIN_TARGET:.0f} points on its own domain over the anchor."
    )
    lines += ["", *notes] if notes else []
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        replace_section(ROOT / "docs" / "PERFORMANCE.md", "expert_quality", "Expert quality (issue 2)", report)
    sys.exit(0 if all(r[-1] for r in rows) else 1)


if __name__ == "__main__":
    main()
