"""What changed between two releases: experts added, removed or changed, and every domain's score delta."""

from __future__ import annotations

from coordinator.state.models import Release


def diff_releases(a: Release, b: Release) -> dict:
    before = {e["domain"]: e for e in a.experts}
    after = {e["domain"]: e for e in b.experts}
    changed = {
        d: {"from": before[d]["version"], "to": after[d]["version"]}
        for d in sorted(set(before) & set(after))
        if before[d]["package_digest"] != after[d]["package_digest"]
    }
    domains = sorted(set(a.eval) | set(b.eval))
    scores = {
        d: {
            "from": a.eval.get(d),
            "to": b.eval.get(d),
            "delta": round(b.eval[d] - a.eval[d], 1)
            if a.eval.get(d) is not None and b.eval.get(d) is not None
            else None,
        }
        for d in domains
    }
    return {
        "from": f"r{a.number}",
        "to": f"r{b.number}",
        "added": {d: after[d]["version"] for d in sorted(set(after) - set(before))},
        "removed": {d: before[d]["version"] for d in sorted(set(before) - set(after))},
        "changed": changed,
        "eval": scores,
    }
