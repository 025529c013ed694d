"""Content-addressed blob store on a filesystem: ``blobs/sha256/ab/cdef…``, written once, never modified.

A blob arrives by rename from staging (same filesystem, after fsync), so it is either absent or
complete. A package is a set of blobs; ``materialize`` lays one out as a directory of hard links for
tools that want paths (signature verification, merging) without copying bytes.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import threading
from pathlib import Path

from bar_model.durable import fsync_dir, fsync_file
from protocol.errors import BarFedError

DIGEST = re.compile(r"[0-9a-f]{64}")
_LOCKS: dict[Path, StoreLock] = {}
_LOCKS_GUARD = threading.Lock()


class StoreLock:
    """Held while deciding about digests (a commit moving blobs in, a rejection deleting them): a thread lock
    for this process and an flock on ``root/.lock`` for the others (verification runs in task workers)."""

    def __init__(self, root: Path) -> None:
        self.path = root / ".lock"
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def __enter__(self) -> StoreLock:
        self._thread_lock.acquire()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        fd, self._fd = self._fd, None
        try:
            os.close(fd)  # closing the descriptor releases the flock
        finally:
            self._thread_lock.release()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        with _LOCKS_GUARD:  # one lock per store, however many objects point at it
            self.lock = _LOCKS.setdefault(self.root.resolve(), StoreLock(self.root))

    def path(self, digest: str) -> Path:
        if not DIGEST.fullmatch(digest):
            raise BarFedError("BAD_DIGEST", f"{digest!r} is not a lowercase hex sha256.")
        return self.root / "sha256" / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, source: Path, digest: str) -> Path:
        """Move a fully written, already hashed file into the store; if the content is there already, the
        source stays where it is, for its owner to discard."""
        target = self.path(digest)
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fsync_file(source)
        os.replace(source, target)
        os.chmod(target, 0o444)
        fsync_dir(target.parent)
        return target

    def probe_rename(self, staging: Path) -> None:
        """Rename a small file from ``staging`` into the store and remove it: what every commit does. Catches a
        staging area on another filesystem (EXDEV) or a read-only store before a node uploads gigabytes."""
        staging.mkdir(parents=True, exist_ok=True)
        source = staging / f".probe-{os.getpid()}-{threading.get_ident()}"
        target = self.root / source.name
        try:
            source.write_bytes(b"probe")
            os.replace(source, target)
        except OSError as exc:
            raise BarFedError(
                "BLOB_STORE_UNUSABLE",
                f"a file cannot be moved from staging {staging} into the blob store {self.root} ({exc.strerror}); "
                "put both on one writable filesystem (staging lives inside the blob directory by default).",
            ) from None
        finally:
            source.unlink(missing_ok=True)
            target.unlink(missing_ok=True)

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> set[str]:
        return {p.parent.name + p.name for p in (self.root / "sha256").glob("??/*") if p.is_file()}

    def materialize(self, files: dict[str, str], target: Path) -> Path:
        """A directory whose ``path`` entries are hard links to the blobs ``files`` maps them to."""
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for relative, digest in files.items():
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.path(digest), destination)
            except OSError:
                shutil.copy2(self.path(digest), destination)
        return target
