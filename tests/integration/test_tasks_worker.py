"""Real workers killed with SIGKILL in the middle of a job, on SQLite and PostgreSQL: a `celery worker` subprocess
on the local Redis, and `barfed coordinator serve` (embedded broker, its supervised worker) killed and restarted;
and a private Redis killed and restarted under a running job. Every job finishes exactly once: a new worker takes
a job over when its lease runs out, and the sweeper sends again what a dead broker lost.

The slow job is this module's own handler: workers import the module through the ``task_imports`` setting, which
registers it (product code has no test handler).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from coordinator.tasks.handlers import HANDLERS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
KIND = "test-slow"
STEPS, STEP_S = 8, 0.4


def slow(ctx) -> dict:
    """Eight steps of 0.4 s, resumable from ``work_dir/progress``; logs every start and every finish."""
    with open(ctx.work_dir / "starts.log", "a") as fh:
        fh.write(f"{os.getpid()} {ctx.attempt}\n")
    progress = ctx.work_dir / "progress"
    begin = int(progress.read_text()) if progress.is_file() else 0
    for step in range(begin, STEPS):
        ctx.step(f"s{step}")
        time.sleep(STEP_S)
        progress.write_text(str(step + 1))
    with open(ctx.work_dir / "finishes.log", "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return {"resumed_from": begin, "pid": os.getpid()}


HANDLERS[KIND] = slow  # in this process and in every worker that imports this module


def _settings(tmp_path: Path, db_url: str, **overrides):
    from coordinator.settings import load_settings

    return load_settings(
        home=tmp_path / "coordinator",
        database_url=db_url,
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        api_listen="127.0.0.1:0",
        min_free_bytes=0,
        job_lease_s=3,
        sweep_interval_s=0.5,
        task_imports=[__name__],
        **overrides,
    )


def _env(settings) -> dict[str, str]:
    env = {
        **os.environ,
        "BARFED_COORD_HOME": str(settings.home),
        "BARFED_COORD_DATABASE_URL": settings.db_url,
        "BARFED_COORD_LISTEN": settings.listen,
        "BARFED_COORD_ENROLL_LISTEN": settings.enroll_listen,
        "BARFED_COORD_API_LISTEN": settings.api_listen,
        "BARFED_COORD_MIN_FREE_BYTES": "0",
        "BARFED_COORD_JOB_LEASE_S": str(settings.job_lease_s),
        "BARFED_COORD_SWEEP_INTERVAL_S": str(settings.sweep_interval_s),
        "BARFED_COORD_TASK_QUEUE": settings.task_queue,
        "BARFED_COORD_TASK_IMPORTS": f'["{__name__}"]',
        "PYTHONPATH": str(REPO),
    }
    if settings.broker_url:
        env["BARFED_COORD_BROKER_URL"] = settings.broker_url
    return env


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _job_at_step(registry, job_id: int, step: str):
    from coordinator.state import jobs

    job = jobs.get(registry, job_id)
    return job if job.state == "running" and job.step >= step else None


def _done(registry, job_id: int):
    from coordinator.state import jobs

    job = jobs.get(registry, job_id)
    assert job.state in ("queued", "running", "done"), (job.state, job.error_code, job.error_message)
    return job if job.state == "done" else None


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _assert_finished_once(settings, job, killed_pid: int) -> None:
    work = settings.home / "jobs" / str(job.id)
    starts = (work / "starts.log").read_text().split()
    finishes = (work / "finishes.log").read_text().split()
    assert len(finishes) == 1, finishes  # exactly once
    assert len(starts) == 4 and starts[0] != starts[2], starts  # two runs, in two processes
    assert job.attempts == 2
    assert job.result["resumed_from"] >= 2  # the second run went on from the first one's progress
    assert job.result["pid"] != killed_pid


@pytest.fixture
def redis_queue():
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:  # CI starts the server; a dead one is a failure
        pytest.fail(f"Redis at 127.0.0.1:6379 is not reachable: {exc}")
    queue = f"barfed-test-{uuid.uuid4().hex[:12]}"
    yield queue
    client.delete(queue)
    client.close()


def test_kill_9_of_a_celery_worker_on_redis_mid_job(db_url, tmp_path, redis_queue):
    from coordinator.state import jobs
    from coordinator.state.db import Registry
    from coordinator.tasks.celery_app import make_app
    from coordinator.tasks.dispatch import Dispatcher, Sweeper
    from coordinator.tasks.worker import worker_command

    settings = _settings(tmp_path, db_url, broker_url="redis://127.0.0.1:6379/0", task_queue=redis_queue)
    registry = Registry(settings.db_url)
    with registry.session() as session:
        job_id = jobs.ensure(session, KIND, "k").id
    env = _env(settings)
    log = open(tmp_path / "workers.log", "ab")  # noqa: SIM115
    first = subprocess.Popen(worker_command(1, "WARNING"), env=env, cwd=REPO, stdout=log, stderr=log)
    dispatcher = Dispatcher(make_app(settings), settings)
    sweeper = Sweeper(dispatcher, registry, settings.sweep_interval_s).start()  # what serve --no-worker runs
    second = None
    try:
        held = _wait(lambda: _job_at_step(registry, job_id, "s2"), 60, "the first worker to reach step s2")
        assert held.lease_owner.split(":")[1] == str(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = subprocess.Popen(worker_command(1, "WARNING"), env=env, cwd=REPO, stdout=log, stderr=log)
        job = _wait(lambda: _done(registry, job_id), 60, "the second worker to finish the job")
        _assert_finished_once(settings, job, first.pid)
        dispatcher.dispatch(job_id)  # a redelivered message: the second worker does nothing with it
        time.sleep(1.5)
        assert len((settings.home / "jobs" / str(job_id) / "finishes.log").read_text().split()) == 1
        assert jobs.get(registry, job_id).attempts == 2
    finally:
        sweeper.stop()
        dispatcher.close()
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        registry.dispose()
        log.close()


def _serve(settings, env, log) -> subprocess.Popen:
    (settings.home / "grpc.port").unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "barfed.cli", "coordinator", "serve"], env=env, cwd=REPO, stdout=log, stderr=log
    )
    _wait(lambda: (settings.home / "grpc.port").is_file() or process.poll() is not None, 60, "serve to start")
    assert process.poll() is None, "serve exited"
    return process


def test_kill_9_of_the_embedded_coordinator_mid_job_then_restart(db_url, tmp_path):
    """The embedded default: `barfed coordinator serve` with its SQLite-file broker and its supervised worker,
    the whole process killed; its worker dies with it and the restarted coordinator finishes the job once."""
    from coordinator.setup import initialize
    from coordinator.state import jobs
    from coordinator.state.db import Registry

    settings = _settings(tmp_path, db_url)
    initialize(settings, None)
    registry = Registry(settings.db_url)
    with registry.session() as session:
        job_id = jobs.ensure(session, KIND, "k").id  # queued: serve's sweeper dispatches it
    env = _env(settings)
    log = open(tmp_path / "serve.log", "ab")  # noqa: SIM115
    first = _serve(settings, env, log)
    second = None
    try:
        held = _wait(lambda: _job_at_step(registry, job_id, "s2"), 90, "the first worker to reach step s2")
        worker_pid = int(held.lease_owner.split(":")[1])
        assert worker_pid in _children(first.pid)  # the supervised `celery worker` subprocess runs it
        first.send_signal(signal.SIGKILL)
        first.wait()
        _wait(lambda: not _alive(worker_pid), 10, "the worker to die with its coordinator")
        second = _serve(settings, env, log)
        job = _wait(lambda: _done(registry, job_id), 90, "the restarted coordinator to finish the job")
        _assert_finished_once(settings, job, worker_pid)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        registry.dispose()
        log.close()


def test_the_supervisor_restarts_a_dead_worker_and_it_runs_jobs(tmp_path):
    """serve's `WorkerProcess`: its `celery worker` child killed with SIGKILL is started again, and the new one
    takes work from the embedded broker."""
    from coordinator.state import jobs
    from coordinator.state.db import Registry
    from coordinator.tasks.celery_app import make_app
    from coordinator.tasks.dispatch import Dispatcher
    from coordinator.tasks.worker import WorkerProcess

    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}")
    registry = Registry(settings.db_url)
    supervisor = WorkerProcess(settings, backoff_s=0.2)
    supervisor.start()
    dispatcher = Dispatcher(make_app(settings), settings)
    try:
        first = supervisor.process.pid
        supervisor.process.send_signal(signal.SIGKILL)
        _wait(lambda: supervisor.starts == 2 and supervisor.process.poll() is None, 30, "the worker to restart")
        assert supervisor.process.pid != first
        with registry.session() as session:
            job_id = jobs.ensure(session, "verify", "no-such-submission").id
        dispatcher.dispatch(job_id)
        job = _wait(lambda: jobs.get(registry, job_id).state == "failed" and jobs.get(registry, job_id), 60, "a run")
        assert job.error_code == "UNKNOWN_SUBMISSION"  # run by the new worker, failed with the verifier's code
    finally:
        dispatcher.close()
        supervisor.stop()
        registry.dispose()
    assert supervisor.process.poll() == 0  # a warm shutdown on SIGTERM, not killed with its supervisor thread


def _redis_server(port: int, log) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=log,
        stderr=log,
    )
    _wait(lambda: _accepts(port) or process.poll() is not None, 30, "redis-server to listen")
    assert process.poll() is None, "redis-server exited"
    return process


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # a broker fault: one database shows it
def test_a_redis_restart_mid_job_loses_no_job(db_url, tmp_path):
    """A private Redis killed with SIGKILL (no persistence: every queued message is gone) while a worker runs a
    job, and a second job created while it is down: once Redis is back, the worker finishes the first job once and
    the sweeper sends the second again, with no operator's hand."""
    from coordinator.state import jobs
    from coordinator.state.db import Registry
    from coordinator.tasks.celery_app import make_app
    from coordinator.tasks.dispatch import Dispatcher, Sweeper
    from coordinator.tasks.worker import worker_command

    port = _free_port()
    log = open(tmp_path / "workers.log", "ab")  # noqa: SIM115
    redis_server = _redis_server(port, log)
    settings = _settings(tmp_path, db_url, broker_url=f"redis://127.0.0.1:{port}/0", task_queue="barfed-restart")
    registry = Registry(settings.db_url)
    with registry.session() as session:
        first_job = jobs.ensure(session, KIND, "before").id
    worker = subprocess.Popen(worker_command(1, "WARNING"), env=_env(settings), cwd=REPO, stdout=log, stderr=log)
    dispatcher = Dispatcher(make_app(settings), settings)
    sweeper = Sweeper(dispatcher, registry, settings.sweep_interval_s).start()
    try:
        _wait(lambda: _job_at_step(registry, first_job, "s2"), 60, "the worker to reach step s2")
        redis_server.send_signal(signal.SIGKILL)
        redis_server.wait()
        with registry.session() as session:
            second_job = jobs.ensure(session, KIND, "during").id  # its message cannot be sent now
        time.sleep(2)
        redis_server = _redis_server(port, log)
        back = time.monotonic()
        for job_id in (first_job, second_job):
            _wait(lambda job_id=job_id: _done(registry, job_id), 90, f"job {job_id} to finish")
            finishes = (settings.home / "jobs" / str(job_id) / "finishes.log").read_text().split()
            assert len(finishes) == 1, finishes
        print(f"both jobs done {time.monotonic() - back:.1f} s after Redis came back")
    finally:
        sweeper.stop()
        dispatcher.close()
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)
        redis_server.kill()
        redis_server.wait()
        registry.dispose()
        log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
