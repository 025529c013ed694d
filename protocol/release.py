"""``release.json``: what a release is made of, inside the signed directory.

model-signing binds every file to its digest but names neither the release nor its version; this file,
signed with the rest, binds them: the name ``r<N>``, the exact expert packages (by digest), the anchor, the
router recipe with its seed, steps and thread count (enough to rebuild the release bit for bit), the eval
table beside the parent's, and the wall time of every build step before it is written (signing and publishing come
after it: the build job's result and `releases show` add them).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol.errors import BarFedError

RELEASE_FILE = "release.json"
FORMAT = "barfed-release/1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReleaseExpert(_Strict):
    domain: str
    version: int
    org: str
    package_digest: str  # sha256 of the package's expert.json, which binds every file of it
    files: dict[str, str]  # path -> sha256 of the package's files (the blob store's keys)


class RouterRun(_Strict):
    recipe: dict
    seed: int
    steps: int
    threads: int
    incremental: bool
    trained_rows: list[str]
    frozen_rows: list[str]  # unchanged since the parent, or kept as the node computed them
    kept_rows: list[str]  # no calibration sample: the node's own (privacy) row
    examples: int
    resumed_from: str | None = None  # the router checkpoint an interrupted build continued from


class DomainScore(_Strict):
    score: float | None  # the coordinator's own held-out set (None: no scorer here for this domain)
    package_score: float | None = None  # the eval.jsonl the expert's package carries
    parent: float | None = None
    delta: float | None = None
    expert_score: float | None = None  # the domain's expert alone (the anchor for general), same problems
    expert_package_score: float | None = None  # the expert alone on its package's eval.jsonl
    retention: float | None = None  # score / expert_score (None when the expert scores 0)
    difference: float | None = None  # score - expert_score, in points
    own_share: float | None = None  # routing mass its held-out tokens give its own slot (the anchor for general)
    anchor_share: float | None = None  # ... and the anchor's slot; both layer means (coordinator.release.routing)
    load: float | None = None  # its slot's share of every measured token's mixture


class ReleaseManifest(_Strict):
    format: str = FORMAT
    name: str
    number: int = Field(gt=0)
    parent: int | None
    anchor_fingerprint: str
    experts: list[ReleaseExpert]
    router: RouterRun
    eval: dict[str, DomainScore]
    eval_examples: int
    gate: dict  # tolerance per domain, verdict, forced_by
    project_version: str
    job_id: int | None
    built_at: datetime
    wall_s: dict[str, float]


def write_manifest(directory: Path, manifest: ReleaseManifest) -> Path:
    path = directory / RELEASE_FILE
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(directory: Path) -> ReleaseManifest:
    path = Path(directory) / RELEASE_FILE
    try:
        return ReleaseManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise BarFedError("NOT_A_RELEASE", f"{directory} has no {RELEASE_FILE}.") from None
    except ValidationError as exc:
        raise BarFedError("BAD_RELEASE", f"{path} is not a valid release manifest: {exc.errors()[0]['msg']}.") from None
