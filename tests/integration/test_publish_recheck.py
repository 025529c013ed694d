"""A release never holds an expert that is not ACCEPTED when it becomes visible: an expert quarantined while a build
that planned it is on its way (after its plan, merge and signature, just before the release goes into place) stops
that release; the job fails with EXPERT_NO_LONGER_ACCEPTED, nothing of the release stays visible, and a rebuild
of the same request is queued, whose fresh plan leaves the quarantined expert out."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from coordinator.release import actions, publish
from coordinator.setup import initialize
from coordinator.state import jobs
from coordinator.state import releases as state
from coordinator.state.audit import verify_chain
from coordinator.state.experts import set_expert_state
from coordinator.state.models import AuditEntry
from coordinator.tasks.runner import run_job
from protocol.release import read_manifest

from .release_helpers import accept, build, coordinator_for, package, release_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def coordinator(micro, db_url, tmp_path):
    settings = release_settings(tmp_path, db_url)
    initialize(settings, micro["branch"])
    coordinator = coordinator_for(settings)
    yield coordinator
    coordinator.registry.dispose()


def test_an_expert_quarantined_mid_build_is_never_published(coordinator, say_experts, tmp_path, monkeypatch):
    registry, releases_dir = coordinator.registry, coordinator.settings.releases_dir
    for org, word in {"org-yes": "yes", "org-ok": "ok"}.items():
        accept(coordinator, package(coordinator, say_experts[word], org, 1, tmp_path / f"pkg-{word}-1"), org)
    assert build(coordinator, tmp_path)["name"] == "r1"
    accept(coordinator, package(coordinator, say_experts["yes"], "org-yes", 2, tmp_path / "pkg-yes-2"), "org-yes")
    job = actions.request_build(registry, {}, False, "api:operator:t1")

    into_place = publish.move_into_place

    def quarantined_first(staging, final):
        """The operator quarantines yes v2 after the build planned, merged, evaluated and signed with it."""
        assert ("test-say-yes", 2) in {(e.domain, e.version) for e in read_manifest(staging).experts}
        set_expert_state(registry, "test-say-yes", 2, "QUARANTINED", "leaks its training data", "operator")
        return into_place(staging, final)

    monkeypatch.setattr(publish, "move_into_place", quarantined_first)
    assert run_job(coordinator, job.id) == "failed"
    monkeypatch.undo()

    failed = jobs.get(registry, job.id)
    assert failed.error_code == "EXPERT_NO_LONGER_ACCEPTED", (failed.error_code, failed.error_message)
    assert "test-say-yes v2" in failed.error_message and "QUARANTINED" in failed.error_message
    # Nothing of r2: no row, no channel move, no directory (nor a staging one) a reader could find.
    assert [r.number for r in state.list_releases(registry)] == [1]
    assert state.channels(registry) == {"latest": 1, "stable": 1}
    assert sorted(p.name for p in releases_dir.iterdir()) == ["r1"]
    with registry.session() as session:
        published = list(session.scalars(select(AuditEntry.subject).where(AuditEntry.action == "release.publish")))
        assert published == ["r1"] and verify_chain(session) > 0

    rebuild = jobs.find(registry, "build", f"recheck-{job.id}")
    assert rebuild is not None and rebuild.state == "queued", "a rebuild of the same request is queued"
    assert rebuild.params == job.params
    # Its own plan leaves yes v2 out: r1 holds yes v1 and ok v1 already, so it ends done, publishing nothing.
    assert run_job(coordinator, rebuild.id) == "done"
    assert jobs.get(registry, rebuild.id).result["code"] == "NOTHING_CHANGED"
    assert [r.number for r in state.list_releases(registry)] == [1]
