"""Benchmark: does BAR hold at 32 domains? Retention, router health, update cost and serving cost against N.

For each N in 4, 8, 16, 32 parametric domains (the three families interleaved, so every N mixes them), one
coordinator (its own SQLite registry, blob store and keys under --work) holds the first N experts, every one
trained once and reused across N, and builds through its own release code (``build_release``: merge, route,
evaluate, score every expert alone, routing shares, gate, sign, publish):

1. r1 cold and dense (every slot computes), r2 cold and top-k (the coordinator's ``top_k`` policy; the router
   recipe renormalises the chosen weights). Per domain: the expert's own score, the release's and retention;
   what the gate would have said (the bench publishes with force and records it);
2. router health of both, per layer on held-out tokens (``routing_report``): mixture entropy, the share of each
   domain's tokens whose top choice is its own expert or the anchor, every slot's load (max / mean) and how many
   experts receive < 1% of all tokens (collapsed);
3. serving cost: tokens per second of greedy ``generate`` in stock transformers, dense against top-k;
4. one update: the first domain's organization trains a new expert (seed + 1), packages it, and the coordinator
   builds r3 incrementally on r2 (timed: training, packaging, the build), against multitask re-training of all N
   domains with the same total budget (N times one expert's steps and data). They alternate which runs first.

The four core domains are left out: one of their experts takes 10 minutes here, a parametric one 30 s.

    .venv/bin/python bench/many_domains.py              # the whole curve: 75 min on 2 CPU cores (2026-12-05)
    .venv/bin/python bench/many_domains.py --n 4,8      # part of it; a rerun adds the missing sizes

Every expert and package is kept under --work and every size's measurements in many_domains.json, so a killed run
resumes with the next size it had not finished (--fresh measures every size again).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bar_model.baselines import train_multitask  # noqa: E402
from bar_model.branch import init_anchor  # noqa: E402
from bar_model.domains import get_domain  # noqa: E402
from bar_model.domains.parametric import parametric_names  # noqa: E402
from bar_model.expert import train_expert  # noqa: E402
from bar_model.recipe import RECIPE_DIR, load_expert_recipe, load_router_recipe  # noqa: E402
from bar_model.routing_report import GENERAL, routing_report  # noqa: E402
from bar_model.tokenizer import render_prompt  # noqa: E402
from bench.bar_products import Job, ensure, expert_job, run_jobs  # noqa: E402
from bench.release_cost import accept, federation, make_package, timed  # noqa: E402
from bench.report import machine_line, replace_section  # noqa: E402
from coordinator.release.build import BuildRequest, build_release  # noqa: E402
from coordinator.state.models import Job as JobRow  # noqa: E402
from protocol.layout import ANCHOR_SLOT  # noqa: E402

SIZES = [4, 8, 16, 32]
ANCHOR = ROOT / "barfed" / "anchors" / "tiny"  # the shipped anchor the demo uses: its tokenizer knows every domain
COLLAPSED = 0.01  # an expert receiving less than this share of all measured tokens
SERVING_PROMPTS = 4
SERVING_TOKENS = 32


def domain_order() -> list[str]:
    """Parametric domains with the families interleaved (facts, unit conversions, letters), so every N mixes them."""
    names = parametric_names()
    families = [
        [n for n in names if n.startswith("p-facts")],
        [n for n in names if "-to-" in n],
        [n for n in names if not n.startswith("p-facts") and "-to-" not in n],
    ]
    order = []
    while any(families):
        for family in families:
            if family:
                order.append(family.pop(0))
    return order


def build(coordinator, home: Path, *, cold: bool) -> tuple[dict, float]:
    """One build through the coordinator's own code, forced: the gate's verdict is recorded, not obeyed."""
    with coordinator.registry.session() as session:
        job = JobRow(kind="build", key=uuid.uuid4().hex)
        session.add(job)
        session.flush()
        job_id = job.id
    request = BuildRequest({}, True, "bench", job_id=job_id, cold=cold)
    return timed(lambda: build_release(coordinator, request, home / f"job{job_id}"))


def router_health(release: Path) -> dict:
    """Per layer, then summarised: entropy, top choice own / anchor, load max / mean and collapsed experts."""
    report = routing_report(release, examples=16)
    experts = [d for d in report["domains"] if d != GENERAL]
    layers = []
    for layer, load in enumerate(report["load"]):
        rows = [report["domains"][d]["layers"][layer] for d in experts]
        expert_load = [v for slot, v in load.items() if slot != ANCHOR_SLOT]
        layers.append(
            {
                "entropy": statistics.fmean(r["entropy"] for r in rows),
                "top_own": statistics.fmean(r["top_own"] for r in rows),
                "top_anchor": statistics.fmean(r["top_anchor"] for r in rows),
                "load_max_mean": max(expert_load) / statistics.fmean(expert_load),
                "collapsed": sum(v < COLLAPSED for v in expert_load),
                "anchor_load": load[ANCHOR_SLOT],
            }
        )
    return {
        "layers": layers,
        "entropy": statistics.fmean(r["entropy"] for r in layers),
        "top_own": statistics.fmean(r["top_own"] for r in layers),
        "top_own_min_layer": min(r["top_own"] for r in layers),
        "load_max_mean": max(r["load_max_mean"] for r in layers),
        "collapsed": max(r["collapsed"] for r in layers),  # in the worst layer
        "uniform_entropy": torch.log(torch.tensor(float(len(report["slots"])))).item(),
    }


@torch.inference_mode()
def tokens_per_s(release: Path, domains: list[str]) -> float:
    """Greedy generate in stock transformers, one prompt at a time, every prompt forced to SERVING_TOKENS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(release).eval()
    tokenizer = AutoTokenizer.from_pretrained(release)
    prompts = [render_prompt(tokenizer, get_domain(d).eval_set(1)[0].prompt) for d in domains[:SERVING_PROMPTS]]
    encoded = [tokenizer(p, return_tensors="pt", add_special_tokens=False) for p in prompts]
    settings = {"max_new_tokens": SERVING_TOKENS, "min_new_tokens": SERVING_TOKENS, "do_sample": False}
    model.generate(**encoded[0], **settings)  # warm-up
    started = time.perf_counter()
    for inputs in encoded:
        model.generate(**inputs, **settings)
    return len(encoded) * SERVING_TOKENS / (time.perf_counter() - started)


def release_summary(result: dict, health: dict, serving: float, seconds: float) -> dict:
    table = {d: e for d, e in result["eval"].items() if d != GENERAL}
    learned = {d: e for d, e in table.items() if e.get("expert_score")}
    kept = [e["retention"] for e in learned.values()]
    gate = result["gate"]
    return {
        "eval": result["eval"],
        "wall_s": result["wall_s"],
        "build_s": seconds,
        "learned": len(learned),
        "retention_min": min(kept, default=None),
        "retention_median": statistics.median(kept) if kept else None,
        "at_least_90": sum(k >= 0.9 for k in kept),
        "own_share_min": min((e["own_share"] for e in table.values() if e.get("own_share") is not None), default=None),
        "gate": {key: sorted(gate.get(key) or {}) for key in ("regressions", "low_retention", "starved")},
        "health": health,
        "tokens_per_s": serving,
    }


def measure(n: int, first: str, names, packages, branch, work: Path, args, expert_recipe, router_path) -> dict:
    home = work / f"fed-{n}"
    coordinator = federation(home, branch, router_path, args.eval_examples)
    try:
        for name in names[:n]:
            accept(coordinator, packages[name], f"org-{name}")
        settings, releases = coordinator.settings, coordinator.settings.releases_dir
        row: dict = {"n": n, "updated": names[0], "k": min(args.top_k, n + 1)}
        settings.top_k = None
        dense, dense_s = build(coordinator, home, cold=True)
        settings.top_k = args.top_k
        sparse, sparse_s = build(coordinator, home, cold=True)
        for key, result, seconds in (("dense", dense, dense_s), ("top_k", sparse, sparse_s)):
            release = releases / result["name"]
            row[key] = release_summary(result, router_health(release), tokens_per_s(release, names[:n]), seconds)
            print(f"N={n} {key}: {json.dumps({k: v for k, v in row[key].items() if k != 'eval'})}", flush=True)

        def bar_update() -> None:
            v2 = home / "v2-expert"
            update = expert_recipe.model_copy(update={"seed": expert_recipe.seed + 1})
            _, row["train_s"] = timed(lambda: train_expert(branch, names[0], "mid,sft,rl", v2, update, progress=False))
            calibration = load_router_recipe(str(router_path)).examples_per_domain or 32
            package, row["package_s"] = timed(
                lambda: make_package(
                    v2, names[0], f"org-{names[0]}", 2, home / "v2-package", work / "keys", calibration
                )
            )
            accept(coordinator, package, f"org-{names[0]}")  # upload and verification: not timed
            incremental, row["build_s"] = build(coordinator, home, cold=False)
            row["incremental"] = {"wall_s": incremental["wall_s"], "eval": incremental["eval"]}

        def multitask() -> None:
            out = home / "multitask"
            recipe = expert_recipe.model_copy(update={"anchor_layers": 0})
            _, row["multitask_s"] = timed(lambda: train_multitask(branch, names[:n], out, recipe, progress=False))
            shutil.rmtree(out, ignore_errors=True)

        order = [bar_update, multitask] if first == "bar_update" else [multitask, bar_update]
        row["order"] = [step.__name__ for step in order]
        for step in order:
            step()
        row["bar_s"] = row["train_s"] + row["package_s"] + row["build_s"]
        return row
    finally:
        coordinator.registry.dispose()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


def fmt(value, spec: str = ".0%") -> str:
    return "-" if value is None else format(value, spec)


def report(rows: dict[int, dict], setup: dict, args, expert_recipe, router_recipe) -> str:
    sizes = sorted(rows)
    flags = f" --n {args.n}" if args.n != ",".join(map(str, SIZES)) else ""
    fit = f"rows fitted in {router_recipe.fit_steps} steps, then " if router_recipe.fit_steps else ""
    lines = [
        f"Command: `.venv/bin/python bench/many_domains.py{flags}`  ",
        f"Machine: {machine_line()}; one torch thread everywhere; {setup['wall_s'] / 60:.0f} minutes for this run.",
        "",
        f"Parametric domains on the shipped tiny anchor (4 layers), experts from `expert-{expert_recipe.name}` "
        f"({expert_recipe.sft.steps} SFT steps, only the expert's FFN trains), routers from "
        f"`router-{router_recipe.name}` ({fit}{router_recipe.steps} steps, {router_recipe.incremental_steps} for an "
        f"update; 32 calibration examples per domain); the coordinator evaluates {args.eval_examples} held-out "
        "problems per domain. Retention is over the domains whose expert scores above 0 alone (learned).",
        "",
        "| N | routing | learned | retention: lowest | median | ≥ 90% | lowest own share | entropy (uniform) "
        "| top choice own | load max/mean | collapsed | gate would refuse | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        for key in ("dense", "top_k"):
            r, h = rows[n][key], rows[n][key]["health"]
            refused = ", ".join(f"{k}: {len(v)}" for k, v in r["gate"].items() if v) or "no"
            routing = "dense" if key == "dense" else f"top-{rows[n]['k']}"
            lines.append(
                f"| {n} | {routing} | {r['learned']}/{n} | {fmt(r['retention_min'])} | {fmt(r['retention_median'])} "
                f"| {r['at_least_90']} | {fmt(r['own_share_min'], '.3f')} "
                f"| {h['entropy']:.2f} ({h['uniform_entropy']:.2f}) "
                f"| {h['top_own']:.0%} | {h['load_max_mean']:.1f} | {h['collapsed']} | {refused} "
                f"| {r['tokens_per_s']:.0f} |"
            )
    lines += [
        "",
        "Cost of one update (seconds): BAR = train one expert + package + the incremental build (upload and "
        "verification not timed); multitask = re-training all N domains with N times one expert's budget.",
        "",
        "| N | train one expert | package | incremental build | **BAR** | cold build dense | cold build top-k "
        "| multitask | **BAR / multitask** |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        r = rows[n]
        lines.append(
            f"| {n} | {r['train_s']:.1f} | {r['package_s']:.1f} | {r['build_s']:.1f} | **{r['bar_s']:.1f}** "
            f"| {r['dense']['build_s']:.1f} | {r['top_k']['build_s']:.1f} | {r['multitask_s']:.1f} "
            f"| **{r['bar_s'] / r['multitask_s']:.2f}** |"
        )
    lo, hi = sizes[0], sizes[-1]
    if hi != lo:
        a, b = rows[lo], rows[hi]
        lines += [
            "",
            f"cost({hi}) / cost({lo}): BAR update {b['bar_s'] / a['bar_s']:.2f}, cold top-k build "
            f"{b['top_k']['build_s'] / a['top_k']['build_s']:.2f}, "
            f"multitask {b['multitask_s'] / a['multitask_s']:.2f}.",
        ]
    big = rows[hi]
    lines += ["", f"Per domain at N = {hi} (held-out score; retention in brackets):", ""]
    lines += [
        f"| domain | expert alone | dense release | top-{big['k']} release | own share, top-{big['k']} |",
        "|---|---|---|---|---|",
    ]
    for domain, entry in sorted(big["top_k"]["eval"].items()):
        dense = big["dense"]["eval"][domain]
        lines.append(
            f"| {domain} | {fmt(entry['expert_score'], 'g')} | {fmt(dense['score'], 'g')} ({fmt(dense['retention'])}) "
            f"| {fmt(entry['score'], 'g')} ({fmt(entry['retention'])}) | {fmt(entry['own_share'], '.3f')} |"
        )
    if hi == 32 and lo == 4:
        s = big["top_k"]
        every = s["retention_min"] is not None and s["retention_min"] >= 0.9
        lines += [
            "",
            "Targets (issue 30), at N = 32 with top-k ≤ 4:",
            f"- every learned domain ≥ 90% of its expert: lowest {fmt(s['retention_min'])} → "
            f"**{'met' if every else 'NOT met'}**",
            f"- no collapsed expert: {s['health']['collapsed']} in the worst layer → "
            f"**{'NOT met' if s['health']['collapsed'] else 'met'}**",
            f"- incremental update at 32 ≤ 1.5× at 4: {big['bar_s'] / rows[4]['bar_s']:.2f} → "
            f"**{'met' if big['bar_s'] <= 1.5 * rows[4]['bar_s'] else 'NOT met'}**",
            f"- incremental update ≤ 0.2× multitask at 32: {big['bar_s'] / big['multitask_s']:.2f} → "
            f"**{'met' if big['bar_s'] <= 0.2 * big['multitask_s'] else 'NOT met'}**",
        ]
    lines += ["", "![retention and cost against N](many_domains.png)"]
    return "\n".join(lines)


def chart(rows: dict[int, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(rows)
    fig, (kept, cost) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("dense", "o-"), ("top_k", "s--")):
        for stat in ("retention_min", "retention_median"):
            values = [rows[n][key][stat] for n in sizes]
            kept.plot(sizes, [v if v is not None else float("nan") for v in values], style, label=f"{key} {stat[10:]}")
    kept.axhline(0.9, color="grey", linewidth=0.8)
    kept.set(xscale="log", xticks=sizes, xticklabels=sizes, xlabel="domains N", ylabel="release / expert alone")
    kept.legend(fontsize=8)
    for label, values in (
        ("BAR update", [rows[n]["bar_s"] for n in sizes]),
        ("cold build, top-k", [rows[n]["top_k"]["build_s"] for n in sizes]),
        ("multitask re-training", [rows[n]["multitask_s"] for n in sizes]),
    ):
        cost.plot(sizes, values, "o-", label=label)
    cost.set(xscale="log", yscale="log", xticks=sizes, xticklabels=sizes, xlabel="domains N", ylabel="seconds")
    cost.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / ".barfed" / "bench-many")
    parser.add_argument("--n", default=",".join(map(str, SIZES)), help="federation sizes, e.g. 4,8,16,32")
    parser.add_argument("--expert-recipe", default="many")
    parser.add_argument("--router-recipe", default="many")
    parser.add_argument("--top-k", type=int, default=4, help="experts per token (anchor included) of the sparse builds")
    parser.add_argument("--eval-examples", type=int, default=100, help="coordinator's held-out problems per domain")
    parser.add_argument("--jobs", type=int, default=2, help="experts trained at once, one process of one thread each")
    parser.add_argument("--fresh", action="store_true", help="measure every size again, not only the missing ones")
    parser.add_argument("--keep", action="store_true", help="keep every federation's coordinator directory")
    parser.add_argument("--no-write", action="store_true", help="print the report, do not write PERFORMANCE.md")
    args = parser.parse_args()
    sizes = [int(n) for n in args.n.split(",")]
    torch.set_num_threads(1)
    started = time.perf_counter()

    expert_recipe = load_expert_recipe(args.expert_recipe)
    router_path = Path(args.router_recipe)
    if not router_path.suffix:
        router_path = RECIPE_DIR / f"router-{args.router_recipe}.toml"
    router_recipe = load_router_recipe(str(router_path))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    branch = ensure(work / "anchor-2x", lambda: init_anchor(ANCHOR / "anchor", work / "anchor-2x", ANCHOR / "base"))
    names = domain_order()[: max(sizes)]
    experts = {name: work / "experts" / expert_recipe.name / name for name in names}
    trained, train_s = timed(
        lambda: run_jobs({n: Job(expert_job, (branch, n, experts[n], expert_recipe)) for n in names}, args.jobs)
    )
    print(f"{len(trained)} experts ready in {train_s:.0f} s", flush=True)
    packages_at = work / "packages" / f"{expert_recipe.name}-{router_recipe.name}"
    calibration = router_recipe.examples_per_domain or 32
    packages = {
        n: ensure(
            packages_at / n,
            lambda n=n: make_package(experts[n], n, f"org-{n}", 1, packages_at / n, work / "keys", calibration),
        )
        for n in names
    }

    results_path = work / "many_domains.json"
    saved = {} if args.fresh or not results_path.is_file() else json.loads(results_path.read_text())
    rows = {int(n): row for n, row in saved.get("rows", {}).items()}
    for position, n in enumerate(sizes):
        if n in rows:
            print(f"N={n}: measured by an earlier run, kept (--fresh measures it again)", flush=True)
            continue
        first = ("bar_update", "multitask")[position % 2]  # alternate, so drifting load favours neither side
        rows[n] = measure(n, first, names, packages, branch, work, args, expert_recipe, router_path)
        results_path.write_text(json.dumps({"rows": rows}, indent=1, default=str))
        print(f"N={n}: BAR update {rows[n]['bar_s']:.1f} s, multitask {rows[n]['multitask_s']:.1f} s", flush=True)
    rows = {n: rows[n] for n in sorted(rows) if n in sizes}
    text = report(rows, {"wall_s": time.perf_counter() - started}, args, expert_recipe, router_recipe)
    print(text, flush=True)
    if not args.no_write:
        chart(rows, ROOT / "docs" / "many_domains.png")
        replace_section(
            ROOT / "docs" / "PERFORMANCE.md",
            "many_domains",
            "A federation of 32 domains: retention, router health and cost against N (issue 30)",
            text,
        )


if __name__ == "__main__":
    main()
