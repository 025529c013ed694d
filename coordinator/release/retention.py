"""Retention: how much of each expert's own skill a release keeps, beside the release's score.

Each expert is scored alone (its package merged with the anchor only, which computes exactly the two-slot model it
was trained as) on exactly the problems the release is scored on; the anchor alone stands for ``general``. A score
is kept by everything it depends on (package digest, problems, threads, evaluating code), so an unchanged expert
is never scored again and a cached score is the one a fresh evaluation would give.
"""

from __future__ import annotations

import shutil
import time
from importlib.metadata import version
from pathlib import Path

from bar_model.evaluate import load_model
from bar_model.merge import merge_experts
from coordinator.release.evaluate import score_domain
from coordinator.runtime import Runtime
from coordinator.state import expert_scores
from coordinator.state.models import ExpertScore
from protocol.fingerprint import anchor_fingerprint
from protocol.release import ReleaseExpert

GENERAL = "general"


def evaluator() -> str:
    """The code that scores: a score made by another version of it is not reused."""
    return version("bar-federation")


def alone_scores(
    runtime: Runtime, experts: list[ReleaseExpert], packages: dict[str, Path], work: Path, examples: int, threads: int
) -> tuple[dict[str, dict], list[str]]:
    """domain -> {score, package_score} of each expert alone (the anchor's for ``general``), and the domains that
    were scored now rather than found in the cache."""
    registry, anchor_dir = runtime.registry, runtime.settings.anchor_dir
    wanted = [(e.package_digest, e.domain, packages[e.domain]) for e in experts]
    wanted.append((f"anchor:{anchor_fingerprint(anchor_dir)}", GENERAL, None))
    found: dict[str, dict] = {}
    scored_now: list[str] = []
    for digest, domain, package in wanted:
        row = expert_scores.cached(registry, digest, examples, threads, evaluator())
        if row is None:
            row = _score_alone(anchor_dir, digest, domain, package, work / "alone" / domain, examples, threads)
            expert_scores.remember(registry, row)
            scored_now.append(domain)
        found[domain] = {"score": row.score, "package_score": row.package_score}
    shutil.rmtree(work / "alone", ignore_errors=True)
    return found, scored_now


def _score_alone(
    anchor_dir: Path, digest: str, domain: str, package: Path | None, out: Path, examples: int, threads: int
) -> ExpertScore:
    started = time.perf_counter()
    if package is not None and not out.exists():
        merge_experts(anchor_dir, [package], out)
    model, tokenizer = load_model(out if package is not None else anchor_dir)
    score, package_score = score_domain(model, tokenizer, domain, package, examples)
    return ExpertScore(
        package_digest=digest,
        examples=examples,
        threads=threads,
        evaluator=evaluator(),
        domain=domain,
        score=score,
        package_score=package_score,
        wall_s=round(time.perf_counter() - started, 2),
    )


def retention_entry(release: float | None, expert: float | None) -> dict:
    """{expert, release, retention, difference}: retention is release / expert (None when the expert scores 0 or
    either score is missing: nothing to keep), difference is release - expert in points."""
    both = release is not None and expert is not None
    return {
        "expert": expert,
        "release": release,
        "retention": round(release / expert, 3) if both and expert > 0 else None,
        "difference": round(release - expert, 1) if both else None,
    }


def add_retention(table: dict[str, dict], alone: dict[str, dict]) -> dict[str, dict]:
    """The release's eval table with each domain's own-expert scores and retention beside its score."""
    out = {}
    for domain, entry in table.items():
        own = alone.get(domain, {})
        kept = retention_entry(entry.get("score"), own.get("score"))
        out[domain] = {
            **entry,
            "expert_score": kept["expert"],
            "expert_package_score": own.get("package_score"),
            "retention": kept["retention"],
            "difference": kept["difference"],
        }
    return out
