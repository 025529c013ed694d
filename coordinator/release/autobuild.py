"""The release policy: a build starts by itself after an expert is accepted, quarantined or opted out.

A trigger is any expert accepted or moved between states (quarantined, deprecated, opted out, restored): each
changes what a release would hold. Triggers are read from the audit log (the newest one), not remembered in
memory, so a restarted coordinator neither forgets nor repeats one. A build waits until ``build_debounce_s``
have passed since the newest trigger (experts accepted together make one release), at most one build runs at
a time, and the job's key names the trigger it answers, so each trigger makes one build however often the
policy runs. The job is only queued here; the sweeper (or serve, at once) dispatches it like any other. A trigger
that leaves the experts as the latest release holds them (an expert quarantined, then restored) gets a build that
ends done at its plan step without publishing (NOTHING_CHANGED in its result), and its key is never queued again.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.exc import IntegrityError

from coordinator.settings import CoordinatorSettings
from coordinator.state import jobs
from coordinator.state import releases as state
from coordinator.state.db import Registry


def tick(registry: Registry, settings: CoordinatorSettings, now: dt.datetime | None = None) -> int | None:
    """Queue the build the newest trigger calls for, if it is due; returns the new job's id."""
    if not settings.auto_build:
        return None
    trigger = state.last_trigger(registry)
    if trigger is None:
        return None
    audit_id, at = trigger
    if ((now or dt.datetime.now(dt.UTC)) - at).total_seconds() < settings.build_debounce_s:
        return None
    key = f"auto-{audit_id}"
    if jobs.find(registry, "build", key) is not None:
        return None
    if any(job.state in jobs.ACTIVE for job in jobs.list_jobs(registry, kind="build", limit=20)):
        return None  # the next tick after it ends builds what changed meanwhile
    try:
        return jobs.queue(registry, "build", key, {"actor": "policy", "trigger": audit_id}).id
    except IntegrityError:  # another coordinator queued it at the same moment
        return None
