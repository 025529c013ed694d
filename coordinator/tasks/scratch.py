"""A job's work directory kept on the artifact store too, under ``jobs/<id>/``, so a worker on another machine that
takes the job over resumes it: the small files a handler keeps between attempts (the plan, the release number,
step times, eval tables) are put again at every step, and each complete router checkpoint (its trainer_state.json
is written last) once, as it is saved. What the next attempt can make again from blobs (packages, the merged
model) stays local. `restore` brings back what a worker lacks before the handler runs; `discard` removes it all
when the job is done or cancelled (a failed or gated job keeps it, as it keeps its directory, for `jobs retry`).

What comes back ends up in a signed release (router weights, the eval table the gate reads), and anyone with the
bucket's keys could write these objects. So each object carries a MAC of its name and sha256 under a key derived
from the coordinator's release key, which workers hold and the bucket does not; `restore` takes a job's scratch
only when every object's MAC and bytes check out, and otherwise none of it (the job starts over).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

from coordinator.storage import SHA256_METADATA, ObjectStore
from protocol.errors import BarFedError
from protocol.package import file_sha256

log = logging.getLogger(__name__)
CHECKPOINTS = ".routed.router-run"  # where bar_model.router.train_router keeps its checkpoints, next to "routed"
COMPLETE = "trainer_state.json"
MAC_METADATA = "mac"


def scratch_key(release_key: Path) -> bytes:
    """The MAC key: derived from the release private key (never the key itself, which signs releases)."""
    return hashlib.sha256(b"barfed job scratch\0" + release_key.read_bytes()).digest()


class JobScratch:
    def __init__(self, store: ObjectStore, job_id: int, work: Path, key: bytes) -> None:
        self.store, self.work, self.prefix, self.key = store, work, f"jobs/{job_id}", key
        self._saved: set[str] = set()  # checkpoints already put by this attempt

    def _mac(self, name: str, sha256: str) -> str:
        return hmac.new(self.key, f"{self.prefix}/{name}\0{sha256}".encode(), hashlib.sha256).hexdigest()

    def restore(self) -> int:
        """Download what the store keeps of this job and the work directory lacks; returns how many files."""
        wanted = {}
        for name in self.store.sizes(self.prefix):
            if ".." in name.split("/") or name.startswith("/") or (self.work / name).exists():
                continue
            recorded = self.store.metadata(f"{self.prefix}/{name}") or {}
            sha256 = recorded.get(SHA256_METADATA, "")
            if not hmac.compare_digest(recorded.get(MAC_METADATA, ""), self._mac(name, sha256)):
                log.warning("%s/%s on the store is not what a worker kept; the job starts over", self.prefix, name)
                return 0
            wanted[name] = sha256
        try:
            for name, sha256 in wanted.items():
                self.store.get_file(f"{self.prefix}/{name}", self.work / name, sha256)
        except BarFedError as exc:
            if exc.code != "STORE_OBJECT_CORRUPT":
                raise
            log.warning("%s: %s; the job starts over", self.prefix, exc.message)
            for name in wanted:
                (self.work / name).unlink(missing_ok=True)
            return 0
        return len(wanted)

    def save(self) -> None:
        """Put the work directory's top-level files (again) and every complete checkpoint not put yet."""
        for path in sorted(self.work.glob("*")):
            if path.is_file() and not path.name.startswith("."):
                self._put(path)
        newest = None
        for checkpoint in sorted((self.work / CHECKPOINTS).glob("checkpoint-*"), key=_step):
            if checkpoint.name in self._saved or not (checkpoint / COMPLETE).is_file():
                continue
            files = [p for p in sorted(checkpoint.rglob("*")) if p.is_file() and p.name != COMPLETE]
            for path in [*files, checkpoint / COMPLETE]:  # complete on the store only once its state is there
                self._put(path)
            self._saved.add(checkpoint.name)
            newest = checkpoint.name
        if newest is not None:  # the trainer keeps one checkpoint; so does the store, once the new one is whole
            stored = self.store.sizes(f"{self.prefix}/{CHECKPOINTS}")
            self.store.delete([f"{self.prefix}/{CHECKPOINTS}/{k}" for k in stored if k.split("/", 1)[0] != newest])

    def _put(self, path: Path) -> None:
        name, sha256 = path.relative_to(self.work).as_posix(), file_sha256(path)
        metadata = {MAC_METADATA: self._mac(name, sha256)}
        self.store.put_file(f"{self.prefix}/{name}", path, sha256, scratch=True, metadata=metadata)

    def discard(self) -> None:
        self.store.delete([f"{self.prefix}/{name}" for name in self.store.sizes(self.prefix)])


def _step(checkpoint: Path) -> int:
    suffix = checkpoint.name.rsplit("-", 1)[1]
    return int(suffix) if suffix.isdigit() else -1
