"""Benchmark: how much a release's retention moves from one build to the next, the measurement behind the gate's
default `min_retention`.

On the experts `barfed demo` trained (its work directory), the release is built again as the coordinator builds
it (merge, router on the packages' calibration samples, evaluation on the coordinator's held-out problems), once
per router seed and step budget; each expert is scored alone once. Per domain: the expert's own score, and the
release's retention (release / expert) for every build, with its lowest value and spread. A broken release is
measured beside them: the merged rows with no router training at all.

    .venv/bin/barfed demo                                   # trains the experts (about 11 minutes)
    .venv/bin/python bench/retention_variation.py --demo .barfed/demo --seeds 0 1 2 --steps 400 1000

Two builds run at a time, one thread each; every product and score is kept under --work, so a rerun does only
what is missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import machine_line, replace_section  # noqa: E402

DOMAINS = {"acme-labs": "math", "initech": "code", "globex": "tool_use", "umbrella": "safety"}


def packages_of(demo: Path) -> dict[str, Path]:
    return {d: demo / "nodes" / org / "packages" / f"{d}-v1" for org, d in DOMAINS.items()}


def build_one(demo: str, work: str, steps: int, seed: int, examples: int) -> dict:
    """One release build (steps 0: the merged rows, untrained); domain -> score, kept in work/scores.json."""
    import torch

    from bar_model.merge import merge_experts
    from bar_model.recipe import load_router_recipe
    from bar_model.router import train_router
    from coordinator.release.build import router_samples
    from coordinator.release.evaluate import evaluate_release

    torch.set_num_threads(1)
    demo_dir, out = Path(demo), Path(work) / f"steps{steps}-seed{seed}"
    scores = out / "scores.json"
    if scores.is_file():
        return json.loads(scores.read_text())
    packages = packages_of(demo_dir)
    anchor = demo_dir / "coordinator" / "anchor"
    merged = Path(work) / "merged"
    if not merged.exists():
        merge_experts(anchor, [packages[d] for d in DOMAINS.values()], merged)
    model = merged
    if steps:
        recipe = load_router_recipe("demo").model_copy(update={"seed": seed, "steps": steps})
        experts = [SimpleNamespace(domain=d) for d in DOMAINS.values()]
        samples, kept = router_samples(experts, packages, recipe)
        model = train_router(merged, out / "routed", recipe, samples=samples, keep_rows=kept, progress=False)
    table = evaluate_release(model, packages, examples, None)
    result = {d: e["score"] for d, e in table.items()}
    out.mkdir(parents=True, exist_ok=True)
    scores.write_text(json.dumps(result))
    return result


def alone_one(demo: str, work: str, domain: str, examples: int) -> float:
    """The expert alone (its package merged with the anchor only), as the coordinator scores it."""
    import torch

    from bar_model.evaluate import load_model
    from bar_model.merge import merge_experts
    from coordinator.release.evaluate import score_domain

    torch.set_num_threads(1)
    path = Path(work) / f"alone-{domain}.json"
    if path.is_file():
        return json.loads(path.read_text())
    package = packages_of(Path(demo))[domain]
    alone = Path(work) / f"alone-{domain}"
    if not alone.exists():
        merge_experts(Path(demo) / "coordinator" / "anchor", [package], alone)
    score, _ = score_domain(*load_model(alone), domain, package, examples)
    path.write_text(json.dumps(score))
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path(".barfed/demo"), help="the demo's work directory")
    parser.add_argument("--work", type=Path, default=Path("bench/.retention-variation"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, nargs="+", default=[400])
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="record the table in docs/PERFORMANCE.md")
    args = parser.parse_args()
    demo = args.demo.resolve()
    if not all(p.is_dir() for p in packages_of(demo).values()):
        raise SystemExit(f"{demo} holds no demo packages; run `barfed demo` first (or pass --demo)")
    args.work.mkdir(parents=True, exist_ok=True)
    work = str(args.work.resolve())
    build_one(str(demo), work, 0, 0, args.examples)  # merges once, before the pool shares the merged model
    runs = [(steps, seed) for steps in args.steps for seed in args.seeds]
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        alone = {d: pool.submit(alone_one, str(demo), work, d, args.examples) for d in DOMAINS.values()}
        builds = {run: pool.submit(build_one, str(demo), work, *run, args.examples) for run in runs}
        alone = {d: f.result() for d, f in alone.items()}
        builds = {run: f.result() for run, f in builds.items()}
    untrained = build_one(str(demo), work, 0, 0, args.examples)
    print(table(alone, builds, untrained, args), flush=True)
    if args.write:
        body = "\n".join(
            [
                f"Command: `.venv/bin/python bench/retention_variation.py --demo DEMO --seeds "
                f"{' '.join(map(str, args.seeds))} --steps {' '.join(map(str, args.steps))} --write`  ",
                f"Machine: {machine_line()}. The experts of one `barfed demo` run; {args.examples} held-out problems.",
                "",
                table(alone, builds, untrained, args),
            ]
        )
        title = "Retention from one build to the next (issue 24)"
        replace_section(ROOT / "docs" / "PERFORMANCE.md", "retention_variation", title, body)


def table(alone: dict[str, float], builds: dict[tuple[int, int], dict], untrained: dict, args) -> str:
    def kept(score: float | None, domain: str) -> str:
        return "–" if score is None or not alone[domain] else f"{score / alone[domain]:.0%} ({score:g})"

    lines = ["| build | " + " | ".join(DOMAINS.values()) + " |", "|---|" + "---|" * len(DOMAINS)]
    lines.append("| expert alone | " + " | ".join(f"{alone[d]:g}" for d in DOMAINS.values()) + " |")
    for (steps, seed), scores in builds.items():
        cells = " | ".join(kept(scores[d], d) for d in DOMAINS.values())
        lines.append(f"| router {steps} steps, seed {seed} | {cells} |")
    lines.append(
        "| merged rows, no router training | " + " | ".join(kept(untrained[d], d) for d in DOMAINS.values()) + " |"
    )
    for steps in args.steps:
        shares = {d: [builds[(steps, s)][d] / alone[d] for s in args.seeds if alone[d]] for d in DOMAINS.values()}
        low = " | ".join(f"{min(v):.0%}" if v else "–" for v in shares.values())
        spread = " | ".join(f"{statistics.pstdev(v):.0%}" if len(v) > 1 else "–" for v in shares.values())
        lines.append(f"| {steps} steps: lowest | {low} |")
        lines.append(f"| {steps} steps: spread (std) | {spread} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
