"""What changed between two releases: experts added, removed or changed, every domain's score delta and retention."""

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
    kept_before, kept_after = a.retention or {}, b.retention or {}
    retention = {
        d: {"from": (kept_before.get(d) or {}).get("retention"), "to": (kept_after.get(d) or {}).get("retention")}
        for d in sorted(set(kept_before) | set(kept_after))
    }
    return {
        "from": f"r{a.number}",
        "to": f"r{b.number}",
        "added": {d: after[d]["version"] for d in sorted(set(after) - set(before))},
        "removed": {d: before[d]["version"] for d in sorted(set(before) - set(after))},
        "changed": changed,
        "eval": scores,
        "retention": retention,
    }
