"""Benchmark: the BAR table where the paper's regime begins, on one GPU in at most 9 minutes (issue 24).

The table of `bench/bar_table.py --part table` (anchor, each expert alone, weight average, BTX, multitask
re-training at 4x budget, BAR; retention per domain; the code expert swapped for one retrained with 1.5x SFT,
routed from scratch and incrementally), built from its functions with the `gpu` recipes in bar_model/recipes/:
12 layers, hidden 512, an 8192-token vocabulary, 256-token sequences, and routers trained with BAR's released
recipe (`router-gpu`). Trainers put model and batches on the GPU themselves; evaluation here does too, and
scores every domain's held-out problems in one greedy generation (decoding is latency-bound on a GPU), each
completion cut at its own domain's token limit, which is what generating only that many tokens gives.

    bench/gpu_wheels.sh                     # here: the wheels a GPU machine without a package index lacks
    bash bench/gpu_bar_table.sh             # there: install them, build the table, copy it and the log to $OUT
    .venv/bin/python bench/gpu_bar_table.py --scale micro --work /tmp/w --out /tmp/t.md   # CPU, as the CI test

Each step prints one line with its wall time. Every product is kept under --work and every score in
gpu_scores.json there, so a rerun builds and evaluates only what is missing or was made with another recipe;
the report is rewritten after every score, so a run stopped early leaves the rows it reached.
"""

from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # router training asks cuBLAS for determinism

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import datasets
import torch
import transformers
import trl
from transformers.utils import logging as hf_logging

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bar_model.base import build_base  # noqa: E402
from bar_model.baselines import build_btx, train_multitask, weight_average  # noqa: E402
from bar_model.branch import init_anchor  # noqa: E402
from bar_model.domains import get_domain  # noqa: E402
from bar_model.evaluate import load_model  # noqa: E402
from bar_model.expert import train_expert  # noqa: E402
from bar_model.recipe import load_base_recipe, load_expert_recipe, load_router_recipe  # noqa: E402
from bar_model.tokenizer import render_prompt  # noqa: E402
from bench.bar_table import (  # noqa: E402
    COLUMNS,
    EXPERT_DOMAINS,
    bar_model,
    card_wall_s,
    ensure,
    recorded_recipe,
    routing_line,
)
from bench.report import machine_line  # noqa: E402

# scale -> (base, expert, router recipe names, held-out problems per domain)
SCALES = {"gpu": ("gpu", "gpu", "gpu", 200), "micro": ("micro", "micro", "gpu-micro", 4)}
BAR, MULTITASK, AVERAGE, BTX = "BAR (merge + router)", "multitask (4x budget)", "weight average", "BTX (no anchor slot)"
# BAR's router rate moves a router weight by at most ~0.007 in 68 steps, close to the rows as merged (which leaked
# 50-79% on the tiny model): the same router at router-tiny's rate is measured beside it.
BAR_FAST = "BAR, router at lr 1e-2"
ROW_ORDER = ["anchor", *(f"{d} expert" for d in EXPERT_DOMAINS), AVERAGE, MULTITASK, BTX, BAR, BAR_FAST]
SWAPS = {"router retrained": "bar-swapped", "incremental router": "bar-swapped-incremental"}


class Clock:
    """Runs the steps, printing one line each with its wall time and the run's total."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.steps: list[tuple[str, float]] = []

    def __call__(self, name: str, fn):
        began = time.perf_counter()
        result = fn()
        spent = time.perf_counter() - began
        self.steps.append((name, spent))
        print(f"[{time.perf_counter() - self.started:7.1f} s] {name}: {spent:.1f} s", flush=True)
        return result


@torch.no_grad()
def score_domains(model, tokenizer, domains: list[str], n: int, batch_size: int = 1024) -> dict[str, float]:
    """Held-out score (0-100) on ``n`` problems of each domain, from greedy generation in batches that mix domains."""
    problems = [(get_domain(d), e) for d in domains for e in get_domain(d).eval_set(n, 0)]
    longest = max(domain.max_new_tokens for domain, _ in problems)
    device = next(model.parameters()).device
    model.eval()
    tokenizer.padding_side = "left"
    rendered = [render_prompt(tokenizer, e.prompt) for _, e in problems]
    order = sorted(range(len(problems)), key=lambda i: len(rendered[i]))
    correct, total = dict.fromkeys(domains, 0.0), dict.fromkeys(domains, 0)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer([rendered[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(device) for k, v in batch.items()}
        output = model.generate(
            **batch,
            max_new_tokens=longest,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        for i, ids in zip(idx, output[:, batch["input_ids"].shape[1] :].tolist(), strict=True):
            domain, example = problems[i]
            text = tokenizer.decode(ids[: domain.max_new_tokens], skip_special_tokens=True)
            correct[domain.name] += domain.score(example, text)
            total[domain.name] += 1
    return {d: round(100.0 * correct[d] / total[d], 1) for d in domains}


class Scores:
    """Scores of every evaluated model, kept in the work directory so a rerun evaluates only what changed.

    A model is known by its path, its weights' modification time and the number of problems (as in bar_table's
    ScoreCache; a file of its own, since these scores come from the mixed-domain batches above)."""

    def __init__(self, path: Path, n: int, device: torch.device) -> None:
        self.path, self.n, self.device = path, n, device
        self.scores = json.loads(path.read_text()) if path.is_file() else {}

    def __call__(self, model_dir: Path) -> dict[str, float]:
        weights = sorted(model_dir.glob("*.safetensors"))
        key = f"{model_dir.resolve()}|{max(w.stat().st_mtime_ns for w in weights)}|{self.n}"
        if key not in self.scores:
            model, tokenizer = load_model(model_dir)
            self.scores[key] = score_domains(model.to(self.device), tokenizer, COLUMNS, self.n)
            self.path.write_text(json.dumps(self.scores, indent=1))
        scores = dict(self.scores[key])
        scores["overall"] = round(sum(scores[c] for c in COLUMNS) / len(COLUMNS), 1)
        return scores


def capped(recipe, steps: int):
    """The recipe with every loop cut to ``steps`` steps of at most 4 examples (8 for RL, one GRPO group): a smoke
    run that checks a large recipe's shapes and times everything but training itself. Renamed, so it builds apart."""
    update = {"name": f"{recipe.name}-smoke{steps}"}
    for field in ("pretrain", "anchor_sft", "mid", "sft", "rl"):
        loop = getattr(recipe, field, None)
        if loop is not None:
            batch = loop.num_generations if field == "rl" else 4
            update[field] = loop.model_copy(update={"steps": min(loop.steps, steps), "batch_size": batch})
    if hasattr(recipe, "fraction"):  # a router recipe is one loop
        update.update(steps=min(recipe.steps, steps), batch_size=4)
    return recipe.model_copy(update=update)


def cells(scores: dict | None, columns: list[str]) -> str:
    return " | ".join(f"{scores[c]:.1f}" if scores else "-" for c in columns)


def report(args, recipes, rows: dict, swaps: dict, code_plus: dict | None, clock: Clock, table: Path) -> str:
    """The table, retention, targets, the swap and every step's wall time, as markdown (missing rows show '-')."""
    base_recipe, expert_recipe, router_recipe = recipes
    size = base_recipe.model
    lines = [
        "Command: "
        + ("`bash bench/gpu_bar_table.sh` (" if args.scale == "gpu" else "(")
        + f"`bench/gpu_bar_table.py --scale {args.scale}`)  ",
        f"Machine: {machine_line()}. Held-out score (0-100), {args.eval_n} problems per domain; base "
        f"`{base_recipe.name}` ({size.num_hidden_layers} layers, hidden {size.hidden_size}, vocabulary "
        f"{base_recipe.tokenizer.vocab_size}, sequences {base_recipe.pretrain.max_length}), experts from "
        f"`{expert_recipe.name}`"
        + (
            f" (the first {expert_recipe.anchor_layers} layers keep the anchor's FFN)"
            if expert_recipe.anchor_layers
            else ""
        )
        + f", routers from `router-{router_recipe.name}` ({routing_line(router_recipe)}, "
        f"{router_recipe.warmup_ratio:.0%} warm-up, z-loss {router_recipe.router_z_loss:g}).",
        "",
        "| model | " + " | ".join(COLUMNS) + " | overall |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for name in ROW_ORDER:
        lines.append(
            f"| {'**' + name + '**' if name == BAR else name} | {cells(rows.get(name), [*COLUMNS, 'overall'])} |"
        )
    bar = rows.get(BAR)
    experts = {d: rows.get(f"{d} expert") for d in EXPERT_DOMAINS}
    lines += ["", "| retention (release / expert alone), % | " + " | ".join(EXPERT_DOMAINS) + " |", "|---" * 5 + "|"]
    for name in (BAR, BAR_FAST):
        routed = rows.get(name)
        shares = {d: routed[d] / e[d] * 100 if routed and e and e[d] else None for d, e in experts.items()}
        cells_ = " | ".join(f"{v:.0f}" if v is not None else "-" for v in shares.values())
        lines.append(f"| {name}: kept | {cells_} |")
    kept = {d: bar[d] / e[d] * 100 if bar and e and e[d] else None for d, e in experts.items()}
    lines.append("")
    if all(v is not None for v in kept.values()):
        met = all(v >= 95 for v in kept.values())
        lines.append(f"- Every domain >= 95% of its expert's own score: **{'met' if met else 'NOT met'}**.")
    if bar and rows.get(MULTITASK):
        multitask = rows[MULTITASK]["overall"]
        met = bar["overall"] >= multitask - 1.4
        lines.append(
            f"- BAR overall {bar['overall']:.1f} >= multitask {multitask:.1f} - 1.4: **{'met' if met else 'NOT met'}**."
        )
    if bar and rows.get(AVERAGE):
        above = bar["overall"] > rows[AVERAGE]["overall"]
        lines.append(
            f"- BAR above the weight average ({rows[AVERAGE]['overall']:.1f}): **{'met' if above else 'NOT met'}**."
        )
    lines += [
        "",
        "Expert swap: code retrained with 1.5x SFT steps and data, merged again, routed from scratch and "
        "incrementally (every unchanged expert's and the anchor's router rows kept from the BAR release, frozen).",
        "",
        "| model | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
        f"| code expert alone | {cells(experts['code'], COLUMNS)} |",
        f"| code expert retrained, alone | {cells(code_plus, COLUMNS)} |",
        f"| BAR | {cells(bar, COLUMNS)} |",
    ]
    for name, scores in swaps.items():
        lines.append(f"| BAR, code swapped, {name} | {cells(scores, COLUMNS)} |")
        if bar:
            lines.append("| change | " + " | ".join(f"{scores[c] - bar[c]:+.1f}" for c in COLUMNS) + " |")
    lines.append("")
    for name, scores in swaps.items():
        if bar:
            code_delta = scores["code"] - bar["code"]
            other = max(abs(scores[c] - bar[c]) for c in COLUMNS if c != "code")
            met = code_delta > 0 and other <= 1
            lines.append(
                f"- {name}: code {code_delta:+.1f}; the largest move of any other domain {other:.1f} points "
                f"(target <= 1 with code improved: **{'met' if met else 'NOT met'}**)."
            )
    walls = [f"{name} {card_wall_s(table / name):.0f} s" for name in ("multitask", "bar") if (table / name).exists()]
    lines += ["", "Training wall time from the cards: " + ", ".join(walls) + "." if walls else ""]
    lines += ["", "| step | wall s |", "|---|---|", *(f"| {name} | {s:.1f} |" for name, s in clock.steps)]
    lines.append(f"| **total** | {time.perf_counter() - clock.started:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="gpu")
    parser.add_argument("--work", type=Path, default=ROOT / ".barfed" / "gpu-bench")
    parser.add_argument("--out", type=Path, default=None, help="markdown report (default: WORK/bar_table.md)")
    parser.add_argument("--eval-n", type=int, default=None, help="held-out problems per domain (scale's default)")
    parser.add_argument("--smoke", type=int, default=None, help="every loop this many steps of tiny batches")
    for kind in ("base", "expert", "router"):
        parser.add_argument(
            f"--{kind}-recipe", default=None, help=f"{kind} recipe (name or TOML file; scale's default)"
        )
    args = parser.parse_args()
    base_name, expert_name, router_name, eval_n = SCALES[args.scale]
    args.eval_n = args.eval_n or eval_n
    recipes = [
        load_base_recipe(args.base_recipe or base_name),
        load_expert_recipe(args.expert_recipe or expert_name),
        load_router_recipe(args.router_recipe or router_name),
    ]
    if args.smoke:
        recipes = [capped(r, args.smoke) for r in recipes]
    base_recipe, recipe, router_recipe = recipes
    hf_logging.disable_progress_bar()  # one line per step, not a bar per checkpoint written or read
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # trainers choose the same one
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for fp32 matrix products: evaluation, bf16 training's rest
    work = args.work / base_recipe.name
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or work / "bar_table.md"
    versions = ", ".join(f"{m.__name__} {m.__version__}" for m in (transformers, trl, datasets))
    print(f"{machine_line()}; {versions}; work {work}; report {out}", flush=True)
    clock, scores_of = Clock(), Scores(work / "gpu_scores.json", args.eval_n, device)
    rows: dict[str, dict] = {}
    swaps: dict[str, dict] = {}
    code_plus_scores: list[dict] = []
    table = work / "table"

    def score(name: str, path: Path, into: dict) -> None:
        into[name] = clock(f"evaluate {path.name}", lambda: scores_of(path))
        plus = code_plus_scores[0] if code_plus_scores else None
        out.write_text(report(args, recipes, rows, swaps, plus, clock, table))

    base, anchor = clock("base + anchor", lambda: build_base(base_recipe, work, progress=False))
    branch = clock("branch", lambda: ensure(work / "anchor-2x", lambda: init_anchor(anchor, work / "anchor-2x", base)))
    if any(recorded_recipe(work / "experts" / d) != recipe.model_dump() for d in EXPERT_DOMAINS):
        shutil.rmtree(table, ignore_errors=True)  # every product in the table is built from these experts
    experts = {}
    for domain in EXPERT_DOMAINS:
        path = work / "experts" / domain
        train = lambda d=domain, p=path: train_expert(branch, d, "mid,sft,rl", p, recipe, progress=False)  # noqa: E731
        experts[domain] = clock(f"expert {domain}", lambda t=train, p=path: ensure(p, t, recipe))
    score("anchor", anchor, rows)
    for domain, path in experts.items():
        score(f"{domain} expert", path, rows)
    paths = list(experts.values())
    clock(
        "merge + router (BAR)",
        lambda: ensure(table / "bar", lambda: bar_model(branch, paths, table / "bar", router_recipe), router_recipe),
    )
    score(BAR, table / "bar", rows)
    fast = router_recipe.model_copy(update={"learning_rate": 1e-2})
    clock(
        "merge + router (BAR, lr 1e-2)",
        lambda: ensure(table / "bar-fast", lambda: bar_model(branch, paths, table / "bar-fast", fast), fast),
    )
    score(BAR_FAST, table / "bar-fast", rows)
    clock(
        "average the experts' weights",
        lambda: ensure(table / "average", lambda: weight_average(branch, paths, table / "average")),
    )
    score(AVERAGE, table / "average", rows)
    btx = lambda: build_btx(branch, paths, table / "btx", router_recipe, progress=False)  # noqa: E731
    clock("merge + router (BTX)", lambda: ensure(table / "btx", btx, router_recipe))
    score(BTX, table / "btx", rows)

    # -- the expert swap: code retrained with 1.5x SFT steps and data --------------------------------------------
    sft = recipe.sft
    plus_recipe = recipe.model_copy(
        update={"sft": sft.model_copy(update={"steps": sft.steps * 3 // 2, "examples": sft.examples * 3 // 2})}
    )
    plus_path = work / "experts" / "code-plus"
    if recorded_recipe(plus_path) != plus_recipe.model_dump():
        for stale in SWAPS.values():  # built from the code-plus about to be retrained
            shutil.rmtree(table / stale, ignore_errors=True)
    train_plus = lambda: train_expert(branch, "code", "mid,sft,rl", plus_path, plus_recipe, progress=False)  # noqa: E731
    clock("expert code, retrained 1.5x", lambda: ensure(plus_path, train_plus, plus_recipe))
    code_plus_scores.append(clock("evaluate code-plus", lambda: scores_of(plus_path)))
    swapped = [plus_path if d == "code" else p for d, p in experts.items()]
    for name, directory in SWAPS.items():
        previous = table / "bar" if name == "incremental router" else None
        build = lambda o=table / directory, prev=previous: bar_model(branch, swapped, o, router_recipe, previous=prev)  # noqa: E731
        clock(f"merge + router (swap, {name})", lambda o=table / directory, b=build: ensure(o, b, router_recipe))
        score(name, table / directory, swaps)

    # -- multitask re-training last: the longest step, so a run cut short still has the rest ---------------------
    # Nothing is merged, so no layer needs to keep the anchor's FFN (as bench/bar_table.py).
    mt_recipe = recipe.model_copy(update={"anchor_layers": 0})
    mt = lambda: train_multitask(branch, EXPERT_DOMAINS, table / "multitask", mt_recipe, progress=False)  # noqa: E731
    clock("multitask re-training (4x)", lambda: ensure(table / "multitask", mt))
    score(MULTITASK, table / "multitask", rows)
    text = report(args, recipes, rows, swaps, code_plus_scores[0], clock, table)
    out.write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
