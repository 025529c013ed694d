"""The release policy: accepted or withdrawn experts start a build by themselves, debounced, one at a time."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from contributor_node.package import build_package
from coordinator.embedded import running_coordinator
from coordinator.enrollment import invite
from coordinator.release import actions
from coordinator.release import autobuild as policy
from coordinator.setup import initialize
from coordinator.state import jobs
from coordinator.state import releases as state
from coordinator.state.experts import set_expert_state
from coordinator.state.models import Job
from coordinator.tasks import runner
from protocol.errors import BarFedError
from protocol.v1 import barfed_pb2 as pb

from .api_matrix import add_expert, add_release
from .conftest import Federation
from .release_helpers import accept, coordinator_for, package, release_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def later(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def test_each_trigger_makes_one_build_after_the_quiet_time_and_never_two_at_once(micro, db_url, say_experts, tmp_path):
    settings = release_settings(tmp_path, db_url, auto_build=True, build_debounce_s=10)
    initialize(settings, micro["branch"])
    coordinator = coordinator_for(settings)
    registry = coordinator.registry
    assert policy.tick(registry, settings) is None  # nothing happened yet

    accept(coordinator, package(coordinator, say_experts["yes"], "org-yes", 1, tmp_path / "a"), "org-yes")
    assert policy.tick(registry, settings) is None  # still within the quiet time
    first = policy.tick(registry, settings, now=later(11))
    assert first is not None and jobs.get(registry, first).params["actor"] == "policy"
    assert policy.tick(registry, settings, now=later(11)) is None  # the same trigger builds once

    set_expert_state(registry, "test-say-yes", 1, "QUARANTINED", "regression", "operator")
    assert policy.tick(registry, settings, now=later(11)) is None  # a build is queued: wait for it
    with registry.session() as session:
        session.get(Job, first).state = "done"
    second = policy.tick(registry, settings, now=later(11))
    assert second is not None and second != first

    off = settings.model_copy(update={"auto_build": False})
    set_expert_state(registry, "test-say-yes", 1, "ACCEPTED", "fixed", "operator")
    with registry.session() as session:
        session.get(Job, second).state = "done"
    assert policy.tick(registry, off, now=later(11)) is None
    registry.dispose()


def test_an_accepted_submission_becomes_a_release_by_itself(micro, db_url, say_experts, tmp_path):
    """Through the real surfaces: enroll, submit over mTLS, verification and the build on the coordinator's
    own worker, the policy starting the build; r1 appears without anyone asking for it."""
    settings = release_settings(tmp_path, db_url, auto_build=True, build_debounce_s=0, sweep_interval_s=0.5)
    initialize(settings, micro["branch"])
    coordinator = coordinator_for(settings)
    with running_coordinator(settings) as address:
        federation = Federation(settings, coordinator.registry, coordinator.keys, address, tmp_path)
        org = federation.enroll("acme-labs", ["test-say-yes"])
        source = say_experts["yes"]
        out = tmp_path / "package"
        build_package(source, out, org="acme-labs", version=1, private_key=org.key_path)
        with org.client(address.service) as client:
            status = client.wait(client.submit(out))
            assert status.state == pb.ACCEPTED, (status.error_code, status.message)
        deadline = time.monotonic() + 180
        while not state.list_releases(coordinator.registry) and time.monotonic() < deadline:
            time.sleep(0.5)
        releases = state.list_releases(coordinator.registry)
        everything = [(j.id, j.key, j.state, j.error_code) for j in jobs.list_jobs(coordinator.registry)]
        assert [r.number for r in releases] == [1], everything
        assert releases[0].domains == ["test-say-yes"]
        # The row is the publish; the job is marked done just after it (the worker's last act): wait for that too.
        while (build := jobs.list_jobs(coordinator.registry, kind="build")) and any(
            j.state not in jobs.FINAL for j in build
        ):
            assert time.monotonic() < deadline, [(j.id, j.state) for j in build]
            time.sleep(0.1)
        assert len(build) == 1 and build[0].state == "done" and build[0].params["actor"] == "policy"
    coordinator.registry.dispose()


def test_a_build_of_what_the_latest_release_holds_ends_done_publishing_nothing_and_is_not_repeated(db_url, tmp_path):
    """The plan step is the authority: a build queued before another published the same experts, and the policy's
    build for a trigger that release already answered, publish nothing and end done with NOTHING_CHANGED in their
    result; the policy does not queue that trigger's build again."""
    settings = release_settings(tmp_path, db_url, auto_build=True, build_debounce_s=0)
    initialize(settings)
    coordinator = coordinator_for(settings)
    registry = coordinator.registry
    invite(registry, "org-yes", ["test-say-yes"], actor="test")
    add_expert(registry, "org-yes", "test-say-yes", 1)
    early = actions.request_build(registry, {}, False, "operator")  # nothing published yet: queued
    expert = {"domain": "test-say-yes", "version": 1, "org": "org-yes", "package_digest": "0" * 64}
    add_release(coordinator, 1, [expert])  # meanwhile another build published exactly that
    with pytest.raises(BarFedError) as refused:
        actions.request_build(registry, {}, False, "operator")
    assert refused.value.code == "NOTHING_CHANGED"

    assert runner.run_job(coordinator, early.id) == "done"
    auto = policy.tick(registry, settings)  # the trigger (the accepted expert) is due once the early build ended
    assert auto is not None and runner.run_job(coordinator, auto) == "done"
    for job in (jobs.get(registry, early.id), jobs.get(registry, auto)):
        assert (job.state, job.error_code, job.result["code"]) == ("done", "", "NOTHING_CHANGED"), job.result
        assert "r1 already holds exactly these experts" in job.result["message"]
    assert [r.number for r in state.list_releases(registry)] == [1]
    assert policy.tick(registry, settings, now=later(60)) is None  # that trigger was answered
    registry.dispose()
