"""A handler's view of its job: the coordinator's runtime, the job's row, its work directory, and the lease that
proves this worker still holds it (renewed on a thread, and at once with each new step)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.runtime import Runtime
from coordinator.state import jobs
from coordinator.state.db import Registry
from coordinator.tasks.scratch import JobScratch
from protocol.errors import BarFedError

log = logging.getLogger(__name__)


class Lease:
    """Renews the lease every lease_s/3 on a thread (and at once with each new step); remembers why it was lost."""

    def __init__(self, registry: Registry, job_id: int, owner: str, lease_s: float, step: str) -> None:
        self.registry, self.job_id, self.owner, self.lease_s = registry, job_id, owner, lease_s
        self.step, self.error = step, None
        self._wake, self._stopped = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def beat(self, step: str) -> None:
        """Renew now and record ``step`` (raises, and remembers, LEASE_LOST or JOB_CANCELLED)."""
        self.step = step
        try:
            jobs.heartbeat(self.registry, self.job_id, self.owner, self.lease_s, step)
        except BarFedError as exc:
            self.error = exc
            raise

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout=self.lease_s)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.lease_s / 3)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                jobs.heartbeat(self.registry, self.job_id, self.owner, self.lease_s)
            except BarFedError as exc:
                self.error = exc
                log.warning("job %s: %s", self.job_id, exc.message)
                return
            except Exception:  # the database may be back at the next beat; if not, the lease runs out
                log.exception("job %s: heartbeat failed", self.job_id)


@dataclass
class JobContext:
    runtime: Runtime
    job_id: int
    kind: str
    key: str
    params: dict
    attempt: int
    work_dir: Path  # settings.jobs_dir / <id>: kept across attempts, for resuming
    lease: Lease = field(repr=False)
    scratch: JobScratch | None = field(default=None, repr=False)  # work_dir kept on the artifact store too

    def step(self, name: str) -> None:
        """Record the current step on the job row, at once, renewing the lease (raises if it was lost); what the
        steps before kept goes onto the artifact store first, for a worker that may take the job over."""
        self.check()
        self.save_scratch()
        self.lease.beat(name)

    def save_scratch(self) -> None:
        if self.scratch is not None:
            self.scratch.save()

    def confirm(self) -> None:
        """Renew the lease now, in the registry (raises LEASE_LOST or JOB_CANCELLED): before an act that must not
        happen once another worker holds the job."""
        self.check()
        self.lease.beat(self.lease.step)

    def check(self) -> None:
        """Raise LEASE_LOST or JOB_CANCELLED when this worker must stop working on the job."""
        if self.lease.error is not None:
            raise self.lease.error
