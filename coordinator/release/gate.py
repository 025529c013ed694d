"""Gate: a release in which a domain scores below its parent's score minus the tolerance is not published.

The comparison uses the coordinator's own held-out score (no organization chooses those problems). A domain new
in this release has no parent score, and one the coordinator has no scorer for has no score: neither can
regress. The default tolerance and how it was measured are in docs/PERFORMANCE.md.
"""

from __future__ import annotations

from protocol.errors import BarFedError


class GateRefused(BarFedError):
    """The build is complete but a domain regressed; ``table`` says which and by how much."""

    def __init__(self, regressions: dict[str, dict], table: dict[str, dict]) -> None:
        worst = ", ".join(
            f"{d} {r['score']:.1f} vs {r['parent']:.1f} (tolerance {r['tolerance']:g})" for d, r in regressions.items()
        )
        super().__init__(
            "GATED",
            f"the release regresses {worst}; fix or quarantine the expert, or publish anyway with --force.",
        )
        self.regressions, self.table = regressions, table


def regressions(table: dict[str, dict], tolerance: float, per_domain: dict[str, float]) -> dict[str, dict]:
    """Domains whose score fell by more than their tolerance below the parent's."""
    found = {}
    for domain, entry in sorted(table.items()):
        score, parent = entry.get("score"), entry.get("parent")
        allowed = per_domain.get(domain, tolerance)
        if score is not None and parent is not None and score < parent - allowed:
            found[domain] = {"score": score, "parent": parent, "tolerance": allowed}
    return found
