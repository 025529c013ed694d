"""Which number a build's release takes: the next free one, remembered in the job's directory so that a retried job
takes the same one; the rename of the staged release into ``releases/r<N>`` is the lock on it (a build that finds
``r<N>`` taken by another job forgets its number, takes the next, and signs again)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from coordinator.release import publish
from coordinator.state import releases as state
from coordinator.state.db import Registry
from protocol.errors import BarFedError

NUMBER_FILE = "number.json"
MAX_TRIES = 100


class ReleaseNumber:
    """The number one build job claims; ``job_id`` None (a rebuild, a test) keeps nothing between calls."""

    def __init__(self, registry: Registry, releases_dir: Path, work: Path, job_id: int | None) -> None:
        self.registry, self.releases_dir, self.job_id = registry, releases_dir, job_id
        self.path = work / NUMBER_FILE if job_id is not None else None

    def published(self) -> Path | None:
        """This job's release, when an earlier attempt already renamed it into place (then only its row is due)."""
        if self.path is None or not self.path.is_file():
            return None
        final = self.releases_dir / f"r{json.loads(self.path.read_text())}"
        return final if final.is_dir() and publish.owned_by(final, self.job_id) else None

    def publish(self, stage: Callable[[int], Path]) -> Path:
        """``stage(number)`` makes the complete, signed staging directory for r<number>; it becomes r<number> by
        one rename, under the next free number. Returns the release directory."""
        for _ in range(MAX_TRIES):
            number = self._claim()
            final = self.releases_dir / f"r{number}"
            if final.exists() and self.job_id is not None and publish.owned_by(final, self.job_id):
                return final
            if not final.exists():
                staging = stage(number)
                if publish.move_into_place(staging, final):
                    return final
                shutil.rmtree(staging, ignore_errors=True)
            self._forget()
        raise BarFedError("NO_RELEASE_NUMBER", "could not claim a release number; another build keeps taking them.")

    def _claim(self) -> int:
        if self.path is not None and self.path.is_file():
            return int(json.loads(self.path.read_text()))
        taken = [int(p.name[1:]) for p in self.releases_dir.glob("r*") if p.name[1:].isdigit()]
        number = max([state.next_number(self.registry) - 1, *taken], default=0) + 1
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(number))
        return number

    def _forget(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
