"""Gate: a release is not published when a domain scores below its parent's score minus the tolerance, or keeps
less than ``min_retention`` of its own expert's score.

Both comparisons use the coordinator's own held-out score (no organization chooses those problems). A domain new
in this release has no parent score, and one the coordinator has no scorer for has no score: neither can
regress. A domain whose expert scores 0 alone has nothing to keep. The defaults and how they were measured are in
docs/PERFORMANCE.md.
"""

from __future__ import annotations

from protocol.errors import BarFedError


class GateRefused(BarFedError):
    """The build is complete but a domain regressed or lost its expert's skill; ``table`` says which and how much."""

    def __init__(
        self, regressions: dict[str, dict], low_retention: dict[str, dict], table: dict[str, dict], routed: str
    ) -> None:
        reasons = [
            f"regresses {d} {r['score']:.1f} vs {r['parent']:.1f} (tolerance {r['tolerance']:g})"
            for d, r in regressions.items()
        ] + [
            f"keeps {r['retention']:.0%} of the {d} expert's own score ({r['score']:.1f} of {r['expert_score']:.1f}; "
            f"minimum {r['min_retention']:.0%})"
            for d, r in low_retention.items()
        ]
        super().__init__(
            "GATED",
            f"the release {'; '.join(reasons)}; see where routing loses skill with `barfed model routing-report "
            f"{routed}`, fix or quarantine the expert, or publish anyway with --force.",
        )
        self.regressions, self.low_retention, self.table = regressions, low_retention, table


def regressions(table: dict[str, dict], tolerance: float, per_domain: dict[str, float]) -> dict[str, dict]:
    """Domains whose score fell by more than their tolerance below the parent's."""
    found = {}
    for domain, entry in sorted(table.items()):
        score, parent = entry.get("score"), entry.get("parent")
        allowed = per_domain.get(domain, tolerance)
        if score is not None and parent is not None and score < parent - allowed:
            found[domain] = {"score": score, "parent": parent, "tolerance": allowed}
    return found


def low_retention(table: dict[str, dict], minimum: float, per_domain: dict[str, float]) -> dict[str, dict]:
    """Domains whose release keeps less than their minimum share of the expert's own score."""
    found = {}
    for domain, entry in sorted(table.items()):
        kept, least = entry.get("retention"), per_domain.get(domain, minimum)
        if kept is not None and kept < least:
            found[domain] = {
                "score": entry["score"],
                "expert_score": entry["expert_score"],
                "retention": kept,
                "min_retention": least,
            }
    return found
