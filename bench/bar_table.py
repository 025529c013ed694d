"""Benchmark: the BAR table at small scale, the expert swap, and cost against the number of experts.

1. Four experts (math, code, tool_use, safety) from the tiny anchor; per-domain and overall held-out
   scores for the anchor, each expert alone, the weight average, multitask re-training (4x budget),
   BTX-style (no anchor slot) and BAR (merge + router). Markdown and a PNG chart.
2. Expert swap: retrain the code expert with 1.5x SFT steps and data, rebuild, and compare: once with
   the router retrained from scratch, once incrementally (the previous release's router rows kept for
   every unchanged expert, only code's row trained).
3. Cost against N: wall time of merge + router training for N = 2, 4, 8, 16 parametric experts, and of
   multitask re-training on the same N domains (cheap `scale` recipe for both).

    .venv/bin/python bench/bar_table.py [--part table|cost]   # about an hour on 2 CPU cores
    .venv/bin/python bench/bar_table.py --part table --base-recipe FILE --expert-recipe FILE   # another model
    .venv/bin/python bench/bar_table.py --part table --family medium   # base-, expert-, router-medium

Independent products (the experts, multitask re-training, every evaluation) are built two at a time, one
process of one thread each (--jobs; bench/bar_products.py). A family keeps its own work directory (its
base recipe's name under --work), PERFORMANCE.md section and chart.

Every product is kept under --work and every score in its scores.json, so a rerun builds and evaluates
only what is missing or was made with another recipe. Each part writes its own section of PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from barfed.logs import quiet_progress_bars  # noqa: E402

quiet_progress_bars()  # a line per product, no bars
from bar_model.base import build_base  # noqa: E402
from bar_model.baselines import train_multitask  # noqa: E402
from bar_model.branch import init_anchor  # noqa: E402
from bar_model.domains.parametric import parametric_names  # noqa: E402
from bar_model.expert import EXPERT_CARD, train_expert  # noqa: E402
from bar_model.recipe import RECIPE_DIR, load_base_recipe, load_expert_recipe, load_router_recipe  # noqa: E402
from bar_model.router import ROUTER_CARD  # noqa: E402
from bench.bar_products import (  # noqa: E402
    COLUMNS,
    EXPERT_DOMAINS,
    ScoreCache,
    bar_model,
    ensure,
    recorded_recipe,
    run_jobs,
    table_jobs,
)
from bench.report import machine_line, replace_section  # noqa: E402

SCALING_N = [2, 4, 8, 16]


def card_wall_s(path: Path) -> float:
    """Training wall time recorded on a product's card: a router's run, or the sum of an expert's stages."""
    if (path / ROUTER_CARD).is_file():
        return json.loads((path / ROUTER_CARD).read_text())["wall_s"]
    stages = json.loads((path / EXPERT_CARD).read_text())["stage_summaries"]
    return sum(stage["wall_s"] for stage in stages.values())


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def routing_line(recipe) -> str:
    """How a router recipe samples and routes, in words for the report."""
    sample = (
        f"{recipe.examples_per_domain} examples per domain"
        if recipe.examples_per_domain
        else f"{recipe.fraction:.0%} stratified sample"
    )
    routing = "dense top-k" if not recipe.top_k else f"top-{recipe.top_k}"
    if recipe.top_k and recipe.norm_topk_prob:
        routing += " with renormalised weights"
    return f"{sample}, {routing}, {recipe.steps} steps at lr {recipe.learning_rate:g}"


def recipe_flags(args) -> str:
    """The command-line flags that reproduce a run's recipe choice (none for the defaults)."""
    if args.family:
        return f" --family {args.family}"
    return "".join(
        f" --{flag} {value}"
        for flag, value in (
            ("base-recipe", args.base_recipe),
            ("expert-recipe", args.expert_recipe),
            ("router-recipe", args.router_recipe),
        )
        if value != "tiny"
    )


def pick_family(args) -> None:
    """``--family F``: the base-F, expert-F and router-F recipes (router-tiny where there is no router-F)."""
    if args.family:
        args.base_recipe = args.expert_recipe = args.family
        args.router_recipe = args.family if (RECIPE_DIR / f"router-{args.family}.toml").is_file() else "tiny"


def section_names(args) -> tuple[str, str, str]:
    """PERFORMANCE.md section key and title, and chart file, of a run: a family's table keeps its own section."""
    if args.family:
        key = f"bar_table_{args.family}"
        return key, f"The BAR table, `{args.family}` family (issue 24)", f"{key}.png"
    return "bar_table", "The BAR table at small scale (issue 3)", "bar_table.png"


def chart(rows: dict[str, dict[str, float]], path: Path, anchor_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    columns = [*COLUMNS, "overall"]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for i, name in enumerate(names):
        ax.bar([c + i * width for c in range(len(columns))], [rows[name][c] for c in columns], width, label=name)
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(columns))], columns)
    ax.set_ylabel("held-out score (0-100)")
    ax.set_title(f"BAR: {anchor_name} anchor, four experts")
    ax.legend(fontsize=8, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table_part(args, work: Path, anchor: Path, branch: Path, router_recipe) -> str:
    """The BAR table and the expert swap (sections 1 and 2 of the docstring); returns the report."""
    recipe = load_expert_recipe(args.expert_recipe)
    table = work / "table"
    if any(recorded_recipe(work / "experts" / d) not in (None, recipe.model_dump()) for d in EXPERT_DOMAINS):
        # Every product in the table is built from these experts. A missing expert is only not built yet: a run
        # stopped before it keeps what it finished (multitask re-training is the longest product).
        shutil.rmtree(table, ignore_errors=True)
    plus_recipe = recipe.model_copy(  # the expert swap's code expert: 1.5x SFT steps and data
        update={
            "sft": recipe.sft.model_copy(
                update={"steps": recipe.sft.steps * 3 // 2, "examples": recipe.sft.examples * 3 // 2}
            )
        }
    )
    if recorded_recipe(work / "experts" / "code-plus") != plus_recipe.model_dump():
        for stale in ("bar-swapped", "bar-swapped-incremental"):  # built from the code-plus about to be retrained
            shutil.rmtree(table / stale, ignore_errors=True)
    cache = args.work / "scores.json"
    run_jobs(table_jobs(work, anchor, branch, recipe, plus_recipe, router_recipe, cache, args.eval_n), args.jobs)

    # Every product and score exists now: the rest only reads them.
    scores_of = ScoreCache(cache)
    experts = {d: work / "experts" / d for d in EXPERT_DOMAINS}
    rows: dict[str, dict[str, float]] = {"anchor": scores_of(anchor, args.eval_n)}
    for domain, path in experts.items():
        rows[f"{domain} expert"] = scores_of(path, args.eval_n)
    rows["weight average"] = scores_of(table / "average", args.eval_n)
    rows["BTX (no anchor slot)"] = scores_of(table / "btx", args.eval_n)
    rows["multitask (4x budget)"] = scores_of(table / "multitask", args.eval_n)
    rows["BAR (merge + router)"] = scores_of(table / "bar", args.eval_n)
    for scores in rows.values():
        scores["overall"] = round(sum(scores[c] for c in COLUMNS) / len(COLUMNS), 1)

    bar, multitask, average = rows["BAR (merge + router)"], rows["multitask (4x budget)"], rows["weight average"]
    kept = {
        d: (bar[d] / rows[f"{d} expert"][d] * 100 if rows[f"{d} expert"][d] else float("nan")) for d in EXPERT_DOMAINS
    }

    # -- expert swap ----------------------------------------------------------------------------
    swapped = scores_of(table / "bar-swapped", args.eval_n)
    incremental = scores_of(table / "bar-swapped-incremental", args.eval_n)
    code_plus = work / "experts" / "code-plus"
    code_plus_scores = scores_of(code_plus, args.eval_n)
    swaps = {"router retrained": swapped, "incremental router": incremental}

    # -- report ---------------------------------------------------------------------------------
    png = ROOT / "docs" / section_names(args)[2]
    if not args.no_write:
        chart(rows, png, args.base_recipe)
    header = "| model | " + " | ".join(COLUMNS) + " | overall |"
    lines = [
        f"Command: `.venv/bin/python bench/bar_table.py --part table{recipe_flags(args)}`  ",
        f"Machine: {machine_line()}. Held-out score (0-100), {args.eval_n} problems per domain; base "
        f"`{args.base_recipe}`, experts from `{args.expert_recipe}`"
        + (f" (the first {recipe.anchor_layers} layers keep the anchor's FFN)" if recipe.anchor_layers else "")
        + f", routers from `router-{router_recipe.name}` ({routing_line(router_recipe)}).",
        "",
        header,
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for name, scores in rows.items():
        cells = " | ".join(f"{scores[c]:.1f}" for c in [*COLUMNS, "overall"])
        lines.append(f"| {'**' + name + '**' if name.startswith('BAR') else name} | {cells} |")
    lines += [
        "",
        f"![BAR table]({png.name})",
        "",
        "Targets:",
        "- BAR keeps >= 95% of each expert's own-domain score: "
        + ", ".join(f"{d} {kept[d]:.0f}%" for d in EXPERT_DOMAINS)
        + f" -> **{'met' if all(v >= 95 for v in kept.values()) else 'NOT met'}**.",
        f"- BAR overall {bar['overall']:.1f} >= multitask {multitask['overall']:.1f} - 1.4: "
        f"**{'met' if bar['overall'] >= multitask['overall'] - 1.4 else 'NOT met'}**; above the weight average "
        f"({average['overall']:.1f}): **{'met' if bar['overall'] > average['overall'] else 'NOT met'}**.",
    ]
    lines.append(
        f"- Training wall time, from the products' cards: multitask re-training "
        f"{card_wall_s(table / 'multitask'):.0f} s; BAR router {card_wall_s(table / 'bar'):.0f} s."
    )
    lines += [
        "",
        "Expert swap: the code expert retrained with 1.5x SFT steps and data, merged again, and routed two ways: "
        "the router retrained from scratch (same recipe and seed), and incrementally (`train_router(..., "
        "previous=<the BAR release>)`: every unchanged expert and the anchor keep their router rows from the "
        "release, frozen; only code's row trains, starting from its row there).",
        "",
        "| model | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
        "| code expert alone | " + " | ".join(f"{rows['code expert'][c]:.1f}" for c in COLUMNS) + " |",
        "| code expert retrained, alone | " + " | ".join(f"{code_plus_scores[c]:.1f}" for c in COLUMNS) + " |",
        "| BAR | " + " | ".join(f"{bar[c]:.1f}" for c in COLUMNS) + " |",
    ]
    for name, scores in swaps.items():
        lines.append(f"| BAR, code swapped, {name} | " + " | ".join(f"{scores[c]:.1f}" for c in COLUMNS) + " |")
        lines.append("| change | " + " | ".join(f"{scores[c] - bar[c]:+.1f}" for c in COLUMNS) + " |")
    lines.append("")
    for name, scores in swaps.items():
        code_delta = scores["code"] - bar["code"]
        largest_other = max(abs(scores[c] - bar[c]) for c in COLUMNS if c != "code")
        lines.append(
            f"- {name}: code {'improved' if code_delta > 0 else 'did NOT improve'} ({code_delta:+.1f}); the largest "
            f"move elsewhere is {largest_other:.1f} points (target <= 1: "
            f"**{'met' if code_delta > 0 and largest_other <= 1 else 'NOT met'}**)."
        )
    lines.append("")
    return "\n".join(lines)


def cost_part(work: Path, branch: Path, router_recipe) -> str:
    """Cost against N (section 3 of the docstring); returns the report."""
    scale_recipe = load_expert_recipe("scale")
    names = parametric_names()[: max(SCALING_N)]
    scale_dir = work / "scale"
    scale_experts = [
        ensure(
            scale_dir / "experts" / n,
            lambda n=n: train_expert(branch, n, "mid,sft,rl", scale_dir / "experts" / n, scale_recipe, progress=False),
        )
        for n in names
    ]
    costs = []
    for n in SCALING_N:
        out = scale_dir / f"bar-{n}"
        shutil.rmtree(out, ignore_errors=True)
        merge_router_s = timed(lambda n=n, out=out: bar_model(branch, scale_experts[:n], out, router_recipe))
        mt = scale_dir / f"multitask-{n}"
        shutil.rmtree(mt, ignore_errors=True)
        multitask_n_s = timed(lambda n=n, mt=mt: train_multitask(branch, names[:n], mt, scale_recipe, progress=False))
        costs.append((n, merge_router_s, multitask_n_s))
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(mt, ignore_errors=True)
    ratio = costs[-1][1] / costs[0][1]
    multitask_ratio = costs[-1][2] / costs[0][2]

    lines = [
        "Command: `.venv/bin/python bench/bar_table.py --part cost`  ",
        f"Machine: {machine_line()}.",
        "",
        f"Parametric domains, `expert-scale` experts, `router-tiny` ({routing_line(router_recipe)}); seconds:",
        "",
        "| N experts | merge + router training | multitask re-training |",
        "|---|---|---|",
        *(f"| {n} | {a:.1f} | {b:.1f} |" for n, a, b in costs),
        "",
        f"cost(16)/cost(2): merge + router {ratio:.1f} (target <= 10: **{'met' if ratio <= 10 else 'NOT met'}**), "
        f"multitask {multitask_ratio:.1f}; multitask grows faster (the same ratio): "
        f"**{'yes' if multitask_ratio > ratio else 'no'}**. In seconds added from N = {costs[0][0]} to "
        f"{costs[-1][0]}: merge + router +{costs[-1][1] - costs[0][1]:.1f}, "
        f"multitask +{costs[-1][2] - costs[0][2]:.1f}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / ".barfed" / "bench")
    parser.add_argument("--eval-n", type=int, default=200)
    parser.add_argument("--part", choices=["table", "cost", "all"], default="all")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--base-recipe", default="tiny", help="base recipe (name or TOML file) of the anchor")
    parser.add_argument("--expert-recipe", default="tiny", help="expert recipe (name or TOML file) for the table")
    parser.add_argument("--router-recipe", default="tiny", help="router recipe (name or TOML file) for the table")
    parser.add_argument(
        "--family", help="base-, expert- and router-FAMILY recipes at once (e.g. medium); overrides the three above"
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="products built or scored at once, one process of one thread each"
    )
    args = parser.parse_args()
    pick_family(args)
    started = time.perf_counter()

    base_recipe, router_recipe = load_base_recipe(args.base_recipe), load_router_recipe(args.router_recipe)
    work = args.work / base_recipe.name
    base, anchor = build_base(base_recipe, work, progress=False)
    branch = ensure(work / "anchor-2x", lambda: init_anchor(anchor, work / "anchor-2x", base))
    doc = ROOT / "docs" / "PERFORMANCE.md"
    if args.part in ("table", "all"):
        report = table_part(args, work, anchor, branch, router_recipe)
        report += (
            f"\nWall time of this command: {(time.perf_counter() - started) / 60:.0f} min with --jobs {args.jobs} "
            "(a rerun reuses every product already under --work, so only a run from an empty --work times the "
            "whole table).\n"
        )
        print(report, flush=True)
        if not args.no_write:
            replace_section(doc, *section_names(args)[:2], report)
    if args.part in ("cost", "all"):
        report = cost_part(work, branch, router_recipe)
        print(report, flush=True)
        if not args.no_write:
            replace_section(doc, "bar_cost", "Merge and router cost against the number of experts (issue 3)", report)


if __name__ == "__main__":
    main()
