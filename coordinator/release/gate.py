"""Gate: a release is not published when a domain scores below its parent's score minus the tolerance, keeps
less than ``min_retention`` of its own expert's score, or routes less than ``min_own_share`` of its held-out tokens'
mixture to its own expert (a collapsed router leaves that expert idle, scored or not).

Both comparisons use the coordinator's own held-out score (no organization chooses those problems). A domain new
in this release has no parent score, and one the coordinator has no scorer for has no score: neither can
regress. A domain whose expert scores 0 alone has nothing to keep. The defaults and how they were measured are in
docs/PERFORMANCE.md.
"""

from __future__ import annotations

from protocol.errors import BarFedError


class GateRefused(BarFedError):
    """The build is complete but a domain regressed, lost its expert's skill or its expert's tokens; ``table`` says
    which and how much."""

    def __init__(
        self,
        regressions: dict[str, dict],
        low_retention: dict[str, dict],
        starved: dict[str, dict],
        table: dict[str, dict],
        routed: str,
    ) -> None:
        reasons = [
            f"regresses {d} {r['score']:.1f} vs {r['parent']:.1f} (tolerance {r['tolerance']:g})"
            for d, r in regressions.items()
        ]
        reasons += [
            f"keeps {r['retention']:.0%} of the {d} expert's own score ({r['score']:.1f} of {r['expert_score']:.1f}; "
            f"minimum {r['min_retention']:.0%})"
            for d, r in low_retention.items()
        ]
        reasons += [
            f"routes {r['own_share']:.1%} of {d}'s tokens to the {d} expert (minimum {r['min_own_share']:.1%})"
            for d, r in starved.items()
        ]
        super().__init__(
            "GATED",
            f"the release {'; '.join(reasons)}; see where routing loses skill with `barfed model routing-report "
            f"{routed}`, fix or quarantine the expert, or publish anyway with --force.",
        )
        self.regressions, self.low_retention, self.starved, self.table = regressions, low_retention, starved, table


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


def starved(table: dict[str, dict], minimum: float, per_domain: dict[str, float]) -> dict[str, dict]:
    """Expert domains whose held-out tokens give their own expert less than their minimum share of the mixture
    (``general`` is the anchor's: not an expert that can be left idle)."""
    found = {}
    for domain, entry in sorted(table.items()):
        share, least = entry.get("own_share"), per_domain.get(domain, minimum)
        if domain != "general" and share is not None and share < least:
            found[domain] = {"own_share": share, "load": entry.get("load"), "min_own_share": least}
    return found
