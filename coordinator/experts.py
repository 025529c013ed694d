"""Expert versions after acceptance: the lifecycle an operator drives (quarantine, deprecate, opt out)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from coordinator.blobs import BlobStore
from coordinator.state import audit
from coordinator.state.db import Registry
from coordinator.state.models import Expert
from protocol.errors import BarFedError

TRANSITIONS = {
    "ACCEPTED": {"QUARANTINED", "DEPRECATED", "OPTED_OUT"},
    "QUARANTINED": {"ACCEPTED", "DEPRECATED", "OPTED_OUT"},
    "DEPRECATED": {"OPTED_OUT"},
    "OPTED_OUT": set(),
}


def set_expert_state(registry: Registry, domain: str, version: int, state: str, reason: str, actor: str) -> Expert:
    """Admin lifecycle: quarantine, deprecate, opt out (or release from quarantine)."""
    with registry.session() as session:
        expert = session.scalar(select(Expert).where(Expert.domain == domain, Expert.version == version))
        if expert is None:
            raise BarFedError("UNKNOWN_EXPERT", f"there is no accepted {domain} v{version}.")
        if state not in TRANSITIONS.get(expert.status, set()):
            raise BarFedError("BAD_TRANSITION", f"{domain} v{version} is {expert.status}; it cannot become {state}.")
        previous, expert.status, expert.reason = expert.status, state, reason[:1000]
        audit.record(
            session, actor, "expert.state", f"{domain}/v{version}", previous=previous, state=state, reason=reason[:1000]
        )
        return expert


def package_dir(blobs: BlobStore, expert: Expert, target: Path) -> Path:
    return blobs.materialize(dict(expert.files), target)
