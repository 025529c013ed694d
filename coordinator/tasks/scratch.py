"""A job's work directory kept on the artifact store too, under ``jobs/<id>/``, so a worker on another machine that
takes the job over resumes it: the small files a handler keeps between attempts (the plan, the release number,
step times, eval tables) are put again at every step, and each complete router checkpoint (its trainer_state.json
is written last) once, as it is saved. What the next attempt can make again from blobs (packages, the merged
model) stays local. `restore` brings back what a worker lacks before the handler runs; `discard` removes it all
when the job ends.
"""

from __future__ import annotations

from pathlib import Path

from coordinator.storage import ObjectStore
from protocol.package import file_sha256

CHECKPOINTS = ".routed.router-run"  # where bar_model.router.train_router keeps its checkpoints, next to "routed"
COMPLETE = "trainer_state.json"


class JobScratch:
    def __init__(self, store: ObjectStore, job_id: int, work: Path) -> None:
        self.store, self.work, self.prefix = store, work, f"jobs/{job_id}"
        self._saved: set[str] = set()  # checkpoints already put by this attempt

    def restore(self) -> int:
        """Download what the store keeps of this job and the work directory lacks; returns how many files."""
        fetched = 0
        for name in self.store.sizes(self.prefix):
            target = self.work / name
            if ".." in name.split("/") or name.startswith("/") or target.exists():
                continue
            self.store.get_file(f"{self.prefix}/{name}", target)
            fetched += 1
        return fetched

    def save(self) -> None:
        """Put the work directory's top-level files (again) and every complete checkpoint not put yet."""
        for path in sorted(self.work.glob("*")):
            if path.is_file() and not path.name.startswith("."):
                self.store.put_file(f"{self.prefix}/{path.name}", path, file_sha256(path), scratch=True)
        newest = None
        for checkpoint in sorted((self.work / CHECKPOINTS).glob("checkpoint-*"), key=_step):
            if checkpoint.name in self._saved or not (checkpoint / COMPLETE).is_file():
                continue
            files = [p for p in sorted(checkpoint.rglob("*")) if p.is_file() and p.name != COMPLETE]
            for path in [*files, checkpoint / COMPLETE]:  # complete on the store only once its state is there
                key = f"{self.prefix}/{path.relative_to(self.work).as_posix()}"
                self.store.put_file(key, path, file_sha256(path), scratch=True)
            self._saved.add(checkpoint.name)
            newest = checkpoint.name
        if newest is not None:  # the trainer keeps one checkpoint; so does the store, once the new one is whole
            stored = self.store.sizes(f"{self.prefix}/{CHECKPOINTS}")
            self.store.delete([f"{self.prefix}/{CHECKPOINTS}/{k}" for k in stored if k.split("/", 1)[0] != newest])

    def discard(self) -> None:
        self.store.delete([f"{self.prefix}/{name}" for name in self.store.sizes(self.prefix)])


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint.name.rsplit("-", 1)[1].isdigit() else -1
