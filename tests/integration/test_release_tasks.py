"""Release builds on real task workers, on SQLite and PostgreSQL: a `celery worker` subprocess on the local Redis
killed with SIGKILL in the middle of router training, and the embedded default (`barfed coordinator serve` with
its own broker and worker) killed and restarted. A new worker finishes the job once, from the last router
checkpoint, and a poller that lists releases the whole time never sees one that is not complete and signed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from coordinator.release import actions
from coordinator.setup import initialize
from coordinator.state import jobs
from coordinator.state import releases as state
from coordinator.tasks.worker import worker_command
from protocol.release import read_manifest
from protocol.signing import verify_directory

from .release_helpers import accept, coordinator_for, package, release_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# Long enough to kill in the middle (checkpoints every 20 steps), short enough for the suite.
SLOW_ROUTER = {"steps": 160, "save_steps": 20}


def settings_env(settings) -> dict[str, str]:
    """The settings a worker or coordinator subprocess must share with this test, as BARFED_COORD_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARFED_COORD_")}
    fields = {
        "home": settings.home.resolve(),
        "database_url": settings.db_url,
        "router_recipe": settings.router_recipe,
        "eval_examples": settings.eval_examples,
        "auto_build": str(settings.auto_build).lower(),
        "build_debounce_s": settings.build_debounce_s,
        "job_lease_s": settings.job_lease_s,
        "sweep_interval_s": settings.sweep_interval_s,
        "task_queue": settings.task_queue,
        "min_free_bytes": settings.min_free_bytes,
        "listen": settings.listen,
        "enroll_listen": settings.enroll_listen,
        "api_listen": settings.api_listen,
    }
    if settings.broker_url:
        fields["broker_url"] = settings.broker_url
    env.update({f"BARFED_COORD_{k.upper()}": str(v) for k, v in fields.items()})
    return env


def slow_recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "router-test.toml"
    text = recipe.read_text()
    for key, value in SLOW_ROUTER.items():
        text = "\n".join(f"{key} = {value}" if line.startswith(f"{key} =") else line for line in text.splitlines())
    recipe.write_text(text + "\n")
    return recipe


class Poller(threading.Thread):
    """Lists releases every few milliseconds; every release it sees must be complete and signed."""

    def __init__(self, coordinator) -> None:
        super().__init__(daemon=True)
        self.coordinator, self.seen, self.problems = coordinator, set(), []
        self.stop = threading.Event()
        self.public_key = coordinator.keys.release_public_path.read_bytes()

    def run(self) -> None:
        # one last look after stop is set: the build's job is marked done just after its release row is written,
        # so a waiter can see the job done before this thread's next 20 ms tick has listed the release
        while True:
            stopping = self.stop.wait(0.02)
            try:
                self.look()
            except Exception as exc:  # a thread that died here would leave `seen` empty and say nothing
                self.problems.append(f"listing releases: {exc!r}")
            if stopping:
                return

    def look(self) -> None:
        for release in state.list_releases(self.coordinator.registry):
            if release.number in self.seen:
                continue
            directory = self.coordinator.settings.releases_dir / f"r{release.number}"
            try:
                read_manifest(directory)
                verify_directory(directory, self.public_key)
            except Exception as exc:
                self.problems.append(f"r{release.number}: {exc}")
            self.seen.add(release.number)


def accept_three(coordinator, say_experts, tmp_path) -> None:
    for word in ("yes", "no", "ok"):
        org = f"org-{word}"
        accept(coordinator, package(coordinator, say_experts[word], org, 1, tmp_path / f"pkg-{word}"), org)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (a coordinator's clean shutdown), SIGKILL if it is still there after a minute."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_for(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def checkpoint_written(settings, job_id: int) -> bool:
    """A complete router checkpoint (the trainer writes trainer_state.json last)."""
    run = settings.home / "jobs" / str(job_id) / ".routed.router-run"
    return any((path / "trainer_state.json").is_file() for path in run.glob("checkpoint-*"))


def finished(registry, job_id: int):
    job = jobs.get(registry, job_id)
    return job if job.state in jobs.FINAL else None


def assert_published_once(coordinator, job, poller) -> None:
    assert job.state == "done", (job.state, job.error_code, job.error_message)
    assert job.attempts >= 2, job.attempts  # the killed attempt and the one that finished
    assert [r.number for r in state.list_releases(coordinator.registry)] == [1]
    releases = sorted(p.name for p in coordinator.settings.releases_dir.iterdir())
    assert releases == ["r1"], releases  # no staging directory left behind
    manifest = read_manifest(coordinator.settings.releases_dir / "r1")
    assert [e.domain for e in manifest.experts] == ["test-say-no", "test-say-ok", "test-say-yes"]
    assert manifest.router.resumed_from and manifest.router.resumed_from.startswith("checkpoint-")
    assert manifest.router.steps == SLOW_ROUTER["steps"] and manifest.job_id == job.id
    poller.stop.set()
    poller.join(60)
    assert not poller.is_alive()
    assert poller.seen == {1} and not poller.problems, poller.problems


def test_a_killed_celery_worker_on_redis_is_replaced_and_the_build_finishes_once(micro, db_url, say_experts, tmp_path):
    """At scale: `serve --no-worker` dispatches; `celery -A coordinator.tasks.celery_app worker` processes on Redis
    run the build."""
    settings = release_settings(
        tmp_path,
        db_url,
        broker_url="redis://127.0.0.1:6379/0",
        task_queue=f"test-{uuid.uuid4().hex[:8]}",
        job_lease_s=3.0,
        sweep_interval_s=1.0,
    )
    settings = settings.model_copy(update={"router_recipe": str(slow_recipe(tmp_path))})
    initialize(settings, micro["branch"])
    coordinator = coordinator_for(settings)
    accept_three(coordinator, say_experts, tmp_path)
    job = actions.request_build(coordinator.registry, {}, False, "operator")

    env = settings_env(settings)
    log = open(tmp_path / "processes.log", "ab")  # noqa: SIM115 - every process appends to it
    serve = subprocess.Popen(
        [sys.executable, "-m", "barfed.cli", "coordinator", "serve", "--no-worker"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    first = subprocess.Popen(worker_command(1, "WARNING"), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    second = None
    poller = Poller(coordinator)
    poller.start()
    try:
        wait_for(lambda: checkpoint_written(settings, job.id), 240, "a router checkpoint")
        assert jobs.get(coordinator.registry, job.id).step == "route"
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        second = subprocess.Popen(
            worker_command(1, "WARNING"), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        done = wait_for(lambda: finished(coordinator.registry, job.id), 300, "the build to finish", poll=0.5)
        assert_published_once(coordinator, done, poller)
        assert serve.poll() is None  # the coordinator ran no worker of its own and stayed up
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(30)
        stop(serve)
        log.close()
        coordinator.registry.dispose()


def test_the_embedded_coordinator_killed_and_restarted_finishes_the_build_once(micro, db_url, say_experts, tmp_path):
    settings = release_settings(tmp_path, db_url, job_lease_s=3.0, sweep_interval_s=1.0)
    settings = settings.model_copy(update={"router_recipe": str(slow_recipe(tmp_path))})
    initialize(settings, micro["branch"])
    coordinator = coordinator_for(settings)
    accept_three(coordinator, say_experts, tmp_path)
    job = actions.request_build(coordinator.registry, {}, False, "operator")
    command = [sys.executable, "-m", "barfed.cli", "coordinator", "serve"]
    env = settings_env(settings)
    log = open(tmp_path / "serve.log", "ab")  # noqa: SIM115 - both runs append to it
    serve = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    poller = Poller(coordinator)
    poller.start()
    try:
        wait_for(lambda: checkpoint_written(settings, job.id), 240, "a router checkpoint")
        serve.send_signal(signal.SIGKILL)  # its worker dies with it
        serve.wait(30)
        serve = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        done = wait_for(lambda: finished(coordinator.registry, job.id), 300, "the build to finish", poll=0.5)
        assert_published_once(coordinator, done, poller)
    finally:
        stop(serve)
        log.close()
        coordinator.registry.dispose()
