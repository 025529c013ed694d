"""The manifest of a release being built: what went into it (experts, parent, router run, eval table, gate) as the
``release.json`` that protocol/release.py defines and the release's signature covers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bar_model.merge import MERGE_CARD
from bar_model.router import router_card
from coordinator.settings import CoordinatorSettings
from protocol.fingerprint import anchor_fingerprint
from protocol.release import ReleaseExpert, ReleaseManifest, RouterRun


@dataclass(frozen=True)
class BuiltModel:
    """A routed, evaluated and gated model, waiting for its release number."""

    experts: list[ReleaseExpert]
    parent: int | None
    routed: Path  # the model directory the release's files come from
    eval: dict[str, dict]
    gate: dict
    job_id: int | None
    wall_s: dict[str, float] = field(default_factory=dict)  # the steps before release.json (see build.py)
    incremental: bool = False  # router rows carried from the parent (False for a first or a cold build)


def release_manifest(settings: CoordinatorSettings, built: BuiltModel, number: int) -> ReleaseManifest:
    card = router_card(built.routed)
    slots = json.loads((built.routed / MERGE_CARD).read_text())["slots"]
    frozen = card.get("frozen_rows", [])
    return ReleaseManifest(
        name=f"r{number}",
        number=number,
        parent=built.parent,
        anchor_fingerprint=anchor_fingerprint(settings.anchor_dir),
        experts=built.experts,
        router=RouterRun(
            recipe=card["recipe"],
            seed=card["recipe"]["seed"],
            steps=card["summary"].get("steps", 0),
            threads=settings.build_threads,
            incremental=built.incremental,
            trained_rows=[slot for slot in slots if slot not in frozen],
            frozen_rows=frozen,
            kept_rows=card.get("kept_rows", []),
            examples=card.get("examples", 0),
            resumed_from=card["summary"].get("resumed_from"),
        ),
        eval=built.eval,
        eval_examples=settings.eval_examples,
        gate=built.gate,
        project_version=version("bar-federation"),
        job_id=built.job_id,
        built_at=datetime.now(UTC).replace(microsecond=0),
        wall_s=built.wall_s,
    )
