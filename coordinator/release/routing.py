"""Routing health in every release: how much of its own domain's tokens each expert receives, and its load.

A router can collapse onto a few slots and leave an expert idle: its domain's tokens go to the anchor or to other
experts. Retention shows the damage where an expert scores; the routing shares show the cause for every expert,
before users meet it. Both come from ``bar_model.routing_report`` on the coordinator's held-out problems.
"""

from __future__ import annotations

from pathlib import Path

from bar_model.routing_report import GENERAL, routing_report
from protocol.layout import ANCHOR_SLOT

ROUTING_EXAMPLES = 16  # per domain: the shares move by about 0.01 from 16 to 32 on the demo's releases


def slot_of(domain: str) -> str:
    return ANCHOR_SLOT if domain == GENERAL else domain


def add_routing(table: dict[str, dict], routed: Path, examples: int = ROUTING_EXAMPLES) -> dict[str, dict]:
    """The eval table with, per domain: ``own_share`` and ``anchor_share`` (layer mean of the routing mass its
    held-out tokens give its own slot and the anchor) and ``load`` (its slot's share of every measured token)."""
    report = routing_report(routed, examples)
    measured = report["domains"]
    load = {slot: sum(entry["slots"][slot] for entry in measured.values()) / len(measured) for slot in report["slots"]}
    out = {}
    for domain, entry in table.items():
        shares = measured.get(domain, {}).get("mean", {})
        out[domain] = {
            **entry,
            "own_share": shares.get("own"),
            "anchor_share": shares.get("anchor"),
            "load": round(load[slot_of(domain)], 6) if slot_of(domain) in load else None,
        }
    return out
