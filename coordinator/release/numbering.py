"""Which number a build's release takes: the next free one, remembered in the job's directory so that a retried job
takes the same one. Two locks hold it: the registry's claim (`state.claim_number`: one job per number, which
workers on different machines agree on) and the rename of the staged release into ``releases/r<N>`` on this
machine. A build that finds the number taken forgets it, takes the next, and signs again.

With an artifact store, whatever objects a claimed number has on the store while it has no release row are an
earlier attempt's (or a failed job's, whose claim this one took over): never visible (a release is listed by its
row), they are removed before this job uploads its own. A job taken over by a worker on another machine finds its
published release on the store rather than under home.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from coordinator.release import publish
from coordinator.release.signed_files import local_copy
from coordinator.runtime import Runtime
from coordinator.state import releases as state
from coordinator.storage import release_prefix
from protocol.errors import BarFedError
from protocol.package import SIGNATURE_FILE
from protocol.release import RELEASE_FILE, read_manifest

NUMBER_FILE = "number.json"
MAX_TRIES = 100


class ReleaseNumber:
    """The number one build job claims; ``job_id`` None (a rebuild, a test) keeps nothing between calls."""

    def __init__(
        self, runtime: Runtime, work: Path, job_id: int | None, check: Callable[[], None] = lambda: None
    ) -> None:
        """``check()`` raises when this worker no longer holds the job (its lease): asked before anything on the
        store is removed, so an attempt that lost its job never touches the one that took it over."""
        self.runtime, self.job_id, self.check = runtime, job_id, check
        self.registry, self.releases_dir, self.store = runtime.registry, runtime.settings.releases_dir, runtime.store
        self.path = work / NUMBER_FILE if job_id is not None else None

    def published(self) -> Path | None:
        """This job's release, when an earlier attempt already published it (then only its row is due): renamed
        into place here, or, by a worker elsewhere, complete on the artifact store."""
        if self.path is None or not self.path.is_file():
            return None
        number = int(json.loads(self.path.read_text()))
        final = self.releases_dir / f"r{number}"
        if final.is_dir() and publish.owned_by(final, self.job_id):
            return final
        if self.store is None or self.store.sha256(f"{release_prefix(number)}/{SIGNATURE_FILE}") is None:
            return None
        copy = local_copy(self.runtime, number, (RELEASE_FILE, SIGNATURE_FILE))  # signed: it names the job
        return copy if read_manifest(copy).job_id == self.job_id else None

    def publish(self, stage: Callable[[int], Path]) -> Path:
        """``stage(number)`` makes the complete, signed staging directory for r<number>; it becomes r<number> by
        one rename, under the next free number. Returns the release directory."""
        floor = 1  # above every number found taken so far
        for _ in range(MAX_TRIES):
            number = self._claim(floor)
            final = self.releases_dir / f"r{number}"
            if final.exists() and self.job_id is not None and publish.owned_by(final, self.job_id):
                return final
            if not final.exists() and self._hold(number):
                staging = stage(number)
                if publish.move_into_place(staging, final):
                    return final
                shutil.rmtree(staging, ignore_errors=True)
            self._forget()
            floor = number + 1
        raise BarFedError("NO_RELEASE_NUMBER", "could not claim a release number; another build keeps taking them.")

    def _hold(self, number: int) -> bool:
        """The registry's claim on ``number`` (a job's; a rebuild or test holds none) and a clean slate for it on
        the store."""
        if self.job_id is None:
            return True
        if not state.claim_number(self.registry, number, self.job_id):
            return False
        if self.store is not None:
            self.check()
            prefix = release_prefix(number)
            self.store.delete([f"{prefix}/{name}" for name in self.store.sizes(prefix)])
        return True

    def _claim(self, floor: int = 1) -> int:
        if self.path is not None and self.path.is_file():
            return int(json.loads(self.path.read_text()))
        taken = [int(p.name[1:]) for p in self.releases_dir.glob("r*") if p.name[1:].isdigit()]
        number = max([state.next_number(self.registry) - 1, *taken, floor - 1]) + 1
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(number))
        return number

    def _forget(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
