"""Workers: a real Celery worker in this process (embedded coordinators, tests) or a supervised subprocess.

``InProcessWorker`` runs Celery's own WorkController (thread pool) on a thread: the same consumer, acks and
task code as ``celery worker``, started in a fraction of a second, which matters to tests that start many
coordinators. ``WorkerProcess`` is what ``barfed coordinator serve`` runs: ``celery -A coordinator.tasks.celery_app
worker`` as a child (through `run_worker`, which first applies the parent's logging), restarted when it dies, killed
with its parent (PR_SET_PDEATHSIG), so a killed coordinator leaves no orphan holding a lease.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import logging.config
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from celery import Celery, signals
from celery.concurrency.thread import TaskPool as ThreadTaskPool

from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)
LOG_CONFIG_ENV = "BARFED_LOG_CONFIG"  # a logging dictConfig (JSON) that the `barfed` command exports
PARENT_ENV = "BARFED_WORKER_PARENT"  # the supervising coordinator's pid: the child dies with it


class AppThreadPool(ThreadTaskPool):
    """Celery's thread pool, with its threads' current app set to this worker's: a task is looked up by name in
    the current app, and a process with several apps (embedded coordinators, tests) must find its own."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.executor.shutdown()  # no thread was started yet
        self.executor = ThreadPoolExecutor(max_workers=self.limit, initializer=self.app.set_current)


class InProcessWorker:
    def __init__(self, app: Celery, concurrency: int | None = None) -> None:
        from celery.worker import WorkController

        self.app = app
        self.controller = WorkController(
            app=app,
            hostname=f"embedded-{uuid.uuid4().hex[:8]}@{os.uname().nodename}",
            pool_cls=AppThreadPool,
            concurrency=concurrency or app.conf.worker_concurrency,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel=logging.WARNING,
        )
        self._thread = threading.Thread(target=self._run, name="celery-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.controller.start()
        except Exception:
            log.exception("the in-process worker stopped")

    def start(self) -> InProcessWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown: the running job finishes (a job cut short would be taken over at its lease's end)."""
        self.controller.stop(in_sighandler=False)
        self._thread.join(timeout)


def _die_with_parent(parent: int) -> None:
    """In the child, first thing: SIGKILL when the coordinator dies (Linux; elsewhere the lease still expires), or
    exit now if it died before this ran. Done here rather than between fork and exec: with no preexec_fn, Python
    spawns with vfork, which runs no fork handler, so gRPC's (and its log line) stay out of it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent:
        os._exit(1)


def worker_command(concurrency: int, loglevel: str = "INFO") -> list[str]:
    """``celery --quiet -A coordinator.tasks.celery_app worker …`` (no banner), through `run_worker`."""
    return [
        sys.executable,
        "-c",
        f"from {__name__} import run_worker; run_worker()",
        "--quiet",
        "-A",
        "coordinator.tasks.celery_app",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--without-mingle",
        "--without-gossip",
        "--hostname",
        f"barfed-{uuid.uuid4().hex[:8]}@%h",
    ]


def run_worker() -> None:
    """The worker child: the logging configuration its parent exported, if any (then Celery sets up none of its
    own, so its lines and its SecurityWarning follow our format and level), then Celery's command line."""
    if PARENT_ENV in os.environ:
        _die_with_parent(int(os.environ.pop(PARENT_ENV)))
    config = os.environ.get(LOG_CONFIG_ENV)
    if config:
        logging.config.dictConfig(json.loads(config))
        signals.setup_logging.connect(_keep_logging, weak=False)
    from celery.__main__ import main

    sys.argv = ["celery", *sys.argv[1:]]
    try:
        main()
    finally:
        gc.freeze()  # no last full collection over the training stack's objects at exit (as barfed.cli.main)


def _keep_logging(**_kwargs) -> None:
    """A receiver of Celery's setup_logging signal: with one, Celery leaves the process's logging alone."""


def _relay(stdout) -> None:
    """What the child prints rather than logs (Celery's "Warm shutdown" notice, a library's print) as our log
    lines, at DEBUG: chatter, and never a line in another format."""
    with stdout:
        for line in stdout:
            if line.strip():
                log.debug("worker's stdout: %s", line.rstrip())


class WorkerProcess:
    """A ``celery worker`` child with the coordinator's settings, restarted (after ``backoff_s``) if it exits."""

    def __init__(self, settings: CoordinatorSettings, backoff_s: float = 2.0) -> None:
        self.settings, self.backoff_s = settings, backoff_s
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.stop_timeout_s = 30.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["BARFED_COORD_HOME"] = str(self.settings.home.resolve())
        env["BARFED_COORD_DATABASE_URL"] = self.settings.db_url
        if self.settings.broker_url:
            env["BARFED_COORD_BROKER_URL"] = self.settings.broker_url
        env["BARFED_COORD_TASK_QUEUE"] = self.settings.task_queue
        env["BARFED_COORD_JOB_LEASE_S"] = str(self.settings.job_lease_s)
        env["BARFED_COORD_WORKER_CONCURRENCY"] = str(self.settings.worker_concurrency)
        env["BARFED_COORD_TASK_IMPORTS"] = json.dumps(self.settings.task_imports)
        env.setdefault("GRPC_VERBOSITY", "ERROR")  # gRPC's C core logs past Python's logging
        env[PARENT_ENV] = str(os.getpid())
        return env

    def _spawn(self) -> subprocess.Popen:
        self.starts += 1
        log.info("starting worker (start %d)", self.starts)
        process = subprocess.Popen(
            worker_command(self.settings.worker_concurrency),
            env=self._env(),  # with $BARFED_LOG_CONFIG when the `barfed` command set one up
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        threading.Thread(target=_relay, args=(process.stdout,), name="worker-stdout", daemon=True).start()
        return process

    def start(self) -> WorkerProcess:
        self._thread.start()
        deadline = time.monotonic() + 30
        while self.process is None and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def _supervise(self) -> None:
        """Every start and the final stop happen on this one thread: PR_SET_PDEATHSIG fires when the *thread*
        that forked the child ends, so the child must never outlive its thread, nor be left by it early."""
        self.process = self._spawn()
        while not self._stop.wait(0.5):
            if self.process.poll() is not None:
                log.warning("worker exited with %s; restarting it", self.process.returncode)
                if self._stop.wait(self.backoff_s):
                    break
                self.process = self._spawn()
        self._shutdown()

    def _shutdown(self) -> None:
        """SIGTERM (Celery's warm shutdown: the running job finishes), then SIGKILL after ``stop_timeout_s``."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        deadline = time.monotonic() + self.stop_timeout_s
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_timeout_s = timeout
        self._stop.set()
        self._thread.join(timeout=timeout + 10)
