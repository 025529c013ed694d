"""Job rows under concurrency, on SQLite and PostgreSQL: one holder at a time, leases, attempts, idempotent runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from protocol.errors import BarFedError

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(db_url):
    from coordinator.state.db import Registry

    registry = Registry(db_url)
    yield registry
    registry.dispose()


def _job(registry, kind="noop", key="k", **kwargs):
    from coordinator.state import jobs

    with registry.session() as session:
        return jobs.ensure(session, kind, key, **kwargs).id


def test_ensure_is_idempotent_and_audited(registry):
    from coordinator.state import jobs
    from coordinator.state.audit import verify_chain

    first = _job(registry, params={"a": 1})
    assert _job(registry) == first
    assert [j.id for j in jobs.list_jobs(registry, kind="noop", state="queued")] == [first]
    assert jobs.due(registry) == [first]
    with registry.session() as session:
        assert verify_chain(session) == 1


def test_the_list_pages_back_by_id_without_a_gap_or_a_repeat_while_jobs_arrive(registry):
    from coordinator.state import jobs

    made = [_job(registry, key=f"k{i}") for i in range(5)]
    first = [j.id for j in jobs.list_jobs(registry, kind="noop", limit=2)]
    assert first == made[:-3:-1]  # the newest two
    newer = _job(registry, key="k5")  # a job created between pages does not shift the next one
    rest = [j.id for j in jobs.list_jobs(registry, kind="noop", limit=10, before=first[-1])]
    assert rest == made[2::-1] and newer not in rest
    assert jobs.list_jobs(registry, kind="noop", before=min(made)) == []


def test_racing_claims_have_exactly_one_winner(registry):
    """Eight threads claim each of twenty jobs at the same moment: every job has exactly one holder."""
    from coordinator.state import jobs

    ids = [_job(registry, key=f"k{i}") for i in range(20)]
    wins: dict[int, list[str]] = {job_id: [] for job_id in ids}
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        owner = f"w{n}"
        try:
            for job_id in ids:
                barrier.wait()
                if jobs.claim(registry, job_id, owner, lease_s=30) is not None:
                    wins[job_id].append(owner)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert all(len(owners) == 1 for owners in wins.values()), wins
    for job_id, owners in wins.items():
        job = jobs.get(registry, job_id)
        assert (job.state, job.lease_owner, job.attempts) == ("running", owners[0], 1)
    assert jobs.due(registry) == []  # all leases are live


def test_lease_heartbeat_expiry_and_takeover(registry):
    from coordinator.state import jobs

    job_id = _job(registry)
    assert jobs.claim(registry, job_id, "a", lease_s=0.5) is not None
    assert jobs.claim(registry, job_id, "b", lease_s=0.5) is None  # a holds it
    assert jobs.claim(registry, job_id, "a", lease_s=0.5).attempts == 1  # the same holder again: no new attempt
    jobs.heartbeat(registry, job_id, "a", lease_s=0.5, step="merge")
    assert jobs.get(registry, job_id).step == "merge"
    time.sleep(0.7)
    assert jobs.due(registry) == [job_id]  # a stopped renewing
    taken = jobs.claim(registry, job_id, "b", lease_s=30)
    assert (taken.lease_owner, taken.attempts, taken.step) == ("b", 2, "merge")
    with pytest.raises(BarFedError) as lost:
        jobs.heartbeat(registry, job_id, "a", lease_s=30)
    assert lost.value.code == "LEASE_LOST"
    with pytest.raises(BarFedError) as lost:
        jobs.finish(registry, job_id, "a", "done")
    assert lost.value.code == "LEASE_LOST"
    jobs.finish(registry, job_id, "b", "done", {"ok": True})
    job = jobs.get(registry, job_id)
    assert (job.state, job.result, job.lease_owner) == ("done", {"ok": True}, "")
    assert jobs.claim(registry, job_id, "c", lease_s=30) is None  # done is done


def test_attempt_limit_ends_failed_with_its_code(registry):
    from coordinator.state import jobs

    job_id = _job(registry, max_attempts=2)
    for owner in ("a", "b"):
        assert jobs.claim(registry, job_id, owner, lease_s=0.01) is not None
        time.sleep(0.05)  # the holder "died"
    assert jobs.claim(registry, job_id, "c", lease_s=30) is None
    job = jobs.get(registry, job_id)
    assert (job.state, job.error_code, job.attempts) == ("failed", "ATTEMPTS_EXHAUSTED", 2)
    assert "retry" in job.error_message
    retried = jobs.retry(registry, job_id, "admin")
    assert (retried.state, retried.attempts) == ("queued", 0)
    with pytest.raises(BarFedError) as err:
        jobs.retry(registry, job_id, "admin")
    assert err.value.code == "JOB_NOT_RETRYABLE"


def test_cancel_reaches_the_holder_at_its_next_heartbeat(registry):
    from coordinator.state import jobs

    job_id = _job(registry)
    jobs.claim(registry, job_id, "a", lease_s=30)
    assert jobs.cancel(registry, job_id, "admin").state == "cancelled"
    with pytest.raises(BarFedError) as err:
        jobs.heartbeat(registry, job_id, "a", lease_s=30)
    assert err.value.code == "JOB_CANCELLED"
    with pytest.raises(BarFedError) as err:
        jobs.cancel(registry, job_id, "admin")
    assert err.value.code == "JOB_NOT_ACTIVE"
    assert jobs.claim(registry, job_id, "b", lease_s=30) is None
    assert jobs.due(registry) == []


class Recorder:
    """Stands in for the broker: records what was dispatched."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def dispatch(self, job_id: int) -> bool:
        self.sent.append(job_id)
        return True


def _runtime(registry, tmp_path, **overrides):
    from coordinator.blobs import BlobStore
    from coordinator.keys import CoordinatorKeys
    from coordinator.runtime import Runtime
    from coordinator.settings import load_settings

    settings = load_settings(home=tmp_path / "home", database_url="sqlite://", **{"job_lease_s": 3, **overrides})
    return Runtime(settings, registry, BlobStore(settings.blob_dir), CoordinatorKeys(settings.pki_dir), Recorder())


def test_runner_outcomes_and_a_redelivered_message_does_nothing_twice(registry, tmp_path, monkeypatch):
    """done with the handler's result; BarFedError → failed; Gated → gated; a crash is retried, then JOB_CRASHED;
    a second message for a finished job runs nothing."""
    from coordinator.state import jobs
    from coordinator.tasks import handlers, runner

    calls: list[str] = []

    def ok(ctx):
        calls.append(ctx.key)
        ctx.step("only")
        (ctx.work_dir / "kept").write_text("x")
        return {"key": ctx.key, "attempt": ctx.attempt}

    def refuse(ctx):
        raise BarFedError("NOPE", "refused on purpose.")

    def gate(ctx):
        raise handlers.Gated({"table": [1, 2]})

    def crash(ctx):
        calls.append("crash")
        raise RuntimeError("bug")

    monkeypatch.setitem(handlers.HANDLERS, "t-ok", ok)
    monkeypatch.setitem(handlers.HANDLERS, "t-refuse", refuse)
    monkeypatch.setitem(handlers.HANDLERS, "t-gate", gate)
    monkeypatch.setitem(handlers.HANDLERS, "t-crash", crash)
    runtime = _runtime(registry, tmp_path)

    ok_id = _job(registry, "t-ok", "a")
    assert runner.run_job(runtime, ok_id) == "done"
    assert runner.run_job(runtime, ok_id) == "skipped"  # the redelivered message
    job = jobs.get(registry, ok_id)
    assert (job.state, job.result, job.step, calls) == ("done", {"key": "a", "attempt": 1}, "only", ["a"])
    assert (runtime.settings.home / "jobs" / str(ok_id) / "kept").is_file()

    refused = _job(registry, "t-refuse", "b")
    assert runner.run_job(runtime, refused) == "failed"
    job = jobs.get(registry, refused)
    assert (job.state, job.error_code, job.error_message) == ("failed", "NOPE", "refused on purpose.")

    gated = _job(registry, "t-gate", "c")
    assert runner.run_job(runtime, gated) == "gated"
    assert jobs.get(registry, gated).result == {"table": [1, 2]}

    crashed = _job(registry, "t-crash", "d", max_attempts=2)
    assert runner.run_job(runtime, crashed) == "crashed"
    job = jobs.get(registry, crashed)
    assert (job.state, job.error_code, runtime.dispatcher.sent) == ("queued", "JOB_CRASHED", [crashed])
    assert runner.run_job(runtime, crashed) == "crashed"
    job = jobs.get(registry, crashed)
    assert (job.state, job.error_code, job.attempts, calls.count("crash")) == ("failed", "JOB_CRASHED", 2, 2)

    unknown = _job(registry, "t-nobody", "e")
    assert runner.run_job(runtime, unknown) == "failed"
    assert jobs.get(registry, unknown).error_code == "NO_HANDLER"
    assert runner.run_job(runtime, 10**6) == "skipped"  # a message for a job this database does not have


def test_the_serving_process_loads_no_job_code():
    """`serve` dispatches jobs and runs none unless its worker is in-process: its modules, the Celery app's
    included, load neither the release build nor torch; a worker loads them when its first job runs."""
    job_code = ("torch", "coordinator.release.build", "coordinator.tasks.runner")
    probe = (
        "import sys, coordinator.serve, coordinator.tasks.celery_app\n"
        f"print(sorted(m for m in {job_code!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]


def test_a_lost_lease_stops_the_handler(registry, tmp_path, monkeypatch):
    """Another worker takes the job over (the lease was stolen here by hand): the first one's check() raises and
    it leaves the row to the new holder."""
    from coordinator.state import jobs
    from coordinator.state.models import Job
    from coordinator.tasks import handlers, runner

    seen: list[str] = []

    def slow(ctx):
        with registry.session() as session:  # another worker took over meanwhile
            session.get(Job, ctx.job_id).lease_owner = "thief"
        for _ in range(100):
            time.sleep(0.05)
            try:
                ctx.check()
            except BarFedError as exc:
                seen.append(exc.code)
                raise
        return {}

    monkeypatch.setitem(handlers.HANDLERS, "t-slow", slow)
    runtime = _runtime(registry, tmp_path, job_lease_s=0.6)
    job_id = _job(registry, "t-slow", "x")
    assert runner.run_job(runtime, job_id) == "lost"
    assert seen == ["LEASE_LOST"]
    job = jobs.get(registry, job_id)
    assert (job.state, job.lease_owner) == ("running", "thief")


def test_jobs_cli_list_show_retry_cancel(db_url, tmp_path, monkeypatch):
    """The operator's commands on a real registry; a mistake exits 2 with its code (the installed entry point)."""
    import subprocess
    import sys

    from typer.testing import CliRunner

    from coordinator.cli import app
    from coordinator.settings import load_settings
    from coordinator.setup import initialize
    from coordinator.state import jobs
    from coordinator.state.db import Registry

    home = tmp_path / "home"
    monkeypatch.setenv("BARFED_COORD_DATABASE_URL", db_url)
    initialize(load_settings(home=home, database_url=db_url))  # the commands refuse a home `init` never made
    registry = Registry(db_url)
    try:
        job_id = _job(registry, "verify", "sub-1")
        runner = CliRunner()
        listed = runner.invoke(app, ["jobs", "list", "--home", str(home)])
        assert listed.exit_code == 0 and "sub-1" in listed.output and "queued" in listed.output, listed.output
        newest = _job(registry, "verify", "sub-2")
        page = runner.invoke(app, ["jobs", "list", "--limit", "1", "--home", str(home)])
        assert "sub-2" in page.output and "sub-1" not in page.output, page.output
        older = runner.invoke(app, ["jobs", "list", "--before", str(newest), "--home", str(home)])
        assert "sub-1" in older.output and "sub-2" not in older.output, older.output
        cancelled = runner.invoke(app, ["jobs", "cancel", str(job_id), "--home", str(home)])
        assert cancelled.exit_code == 0, cancelled.output
        shown = runner.invoke(app, ["jobs", "show", str(job_id), "--home", str(home)])
        assert "cancelled" in shown.output and "0 of 3" in shown.output, shown.output
        retried = runner.invoke(app, ["jobs", "retry", str(job_id), "--home", str(home)])
        assert retried.exit_code == 0, retried.output
        assert jobs.get(registry, job_id).state == "queued"
        assert (home / "broker.db").is_file()  # retry dispatched it on the embedded broker
    finally:
        registry.dispose()
    wrong = subprocess.run(
        [sys.executable, "-m", "barfed.cli", "coordinator", "jobs", "show", "999", "--home", str(home)],
        capture_output=True,
        text=True,
        env={**os.environ, "BARFED_COORD_DATABASE_URL": db_url},
        timeout=120,
    )
    assert wrong.returncode == 2 and "UNKNOWN_JOB" in wrong.stderr, wrong.stderr
