"""Plan: which expert version of every domain a release is built from.

The newest ACCEPTED version of each domain, unless the operator pins one (which must be ACCEPTED too):
QUARANTINED, DEPRECATED and OPTED_OUT versions never enter a release. The plan is written into the build
job's directory once, so every retry of the job builds exactly the same thing. A plan whose experts are exactly
the latest release's (by package digest) would publish that release again under a new number: `unchanged` finds
it, so a build request is refused and a build job publishes nothing (NOTHING_CHANGED), unless forced.
"""

from __future__ import annotations

import json
from pathlib import Path

from coordinator.state import releases as state
from coordinator.state.db import Registry
from coordinator.state.models import Release
from protocol.errors import BarFedError
from protocol.release import ReleaseExpert

PLAN_FILE = "plan.json"


def plan_experts(registry: Registry, pins: dict[str, int] | None = None) -> list[ReleaseExpert]:
    pins = dict(pins or {})
    rows = state.expert_rows(registry)
    by_domain: dict[str, list] = {}
    for row in rows:
        by_domain.setdefault(row.domain, []).append(row)
    for domain, version in pins.items():
        match = [r for r in by_domain.get(domain, []) if r.version == version]
        if not match:
            raise BarFedError("UNKNOWN_EXPERT", f"there is no accepted {domain} v{version} to pin.")
        if match[0].status != "ACCEPTED":
            raise BarFedError(
                "PIN_NOT_ACCEPTED",
                f"{domain} v{version} is {match[0].status}; only ACCEPTED versions enter a release.",
            )
    chosen = []
    for domain in sorted(by_domain):
        candidates = [r for r in by_domain[domain] if r.status == "ACCEPTED"]
        if domain in pins:
            candidates = [r for r in candidates if r.version == pins[domain]]
        if not candidates:
            continue
        row = max(candidates, key=lambda r: r.version)
        chosen.append(
            ReleaseExpert(
                domain=row.domain,
                version=row.version,
                org=row.org_id,
                package_digest=row.package_digest,
                files=dict(row.files),
            )
        )
    if not chosen:
        raise BarFedError("NO_EXPERTS", "no ACCEPTED expert to build a release from; submit and verify one first.")
    return chosen


def unchanged(registry: Registry, experts: list[ReleaseExpert]) -> BarFedError | None:
    """NOTHING_CHANGED when the latest release holds exactly these experts, else None."""
    latest: Release | None = state.latest_release(registry)
    if latest is None:
        return None
    planned = {e.domain: e.package_digest for e in experts}
    if planned != {e["domain"]: e["package_digest"] for e in latest.experts}:
        return None
    return BarFedError(
        "NOTHING_CHANGED",
        f"r{latest.number} already holds exactly these experts, so a build would publish it again; accept or "
        'withdraw an expert first, or build anyway with --force ("force": true over the REST API).',
    )


def save_plan(work: Path, experts: list[ReleaseExpert], parent: int | None) -> None:
    data = {"experts": [e.model_dump() for e in experts], "parent": parent}
    tmp = work / f"{PLAN_FILE}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(work / PLAN_FILE)


def load_plan(work: Path) -> tuple[list[ReleaseExpert], int | None] | None:
    path = work / PLAN_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return [ReleaseExpert(**e) for e in data["experts"]], data["parent"]
