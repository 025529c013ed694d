"""Content-addressed blob store on a filesystem: ``blobs/sha256/ab/cdef…``, written once, never modified.

A blob arrives by rename from staging (same filesystem, after fsync), so it is either absent or
complete. A package is a set of blobs; ``materialize`` lays one out as a directory of hard links for
tools that want paths (signature verification, merging) without copying bytes.

With an artifact store (`mirror_to`), the store holds every blob (``blobs/sha256/ab/cdef…``, put before the commit
that records it) and this directory is a cache: a worker on another machine fetches what a job needs by digest
(checked), and blobs used least recently go once the cache passes ``cache_bytes``. A blob leaves the store only
through `collect_orphans` on the coordinator, under the lock commits take, never from a worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from bar_model.durable import fsync_dir, fsync_file
from protocol.errors import BarFedError

if TYPE_CHECKING:
    from coordinator.storage import ObjectStore

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
        self.mirror: ObjectStore | None = None
        self.cache_bytes: int | None = None

    def mirror_to(self, store: ObjectStore, cache_bytes: int) -> None:
        self.mirror, self.cache_bytes = store, cache_bytes

    def path(self, digest: str) -> Path:
        if not DIGEST.fullmatch(digest):
            raise BarFedError("BAD_DIGEST", f"{digest!r} is not a lowercase hex sha256.")
        return self.root / "sha256" / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        if self.path(digest).is_file():
            return True
        return self.mirror is not None and self.mirror.sha256(self._key(digest)) == digest

    def _key(self, digest: str) -> str:
        from coordinator.storage import blob_key

        return blob_key(digest)

    def upload(self, source: Path, digest: str) -> None:
        """Onto the artifact store (if any) unless there already. A commit calls it before taking its lock, so the
        `put` under the lock only finds it there."""
        if self.mirror is not None and self.mirror.sha256(self._key(digest)) != digest:
            self.mirror.put_file(self._key(digest), source, digest)

    def put(self, source: Path, digest: str) -> Path:
        """Move a fully written, already hashed file into the store; if the content is there already, the
        source stays where it is, for its owner to discard. With an artifact store the blob is on it first."""
        target = self.path(digest)
        self.upload(target if target.is_file() else source, digest)
        return self._place(source, digest)

    def _place(self, source: Path, digest: str) -> Path:
        """The rename into this directory (the content already there: ``source`` stays, for its owner)."""
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
        """From this directory; a copy on the artifact store waits for `collect_orphans` (see the module's doc)."""
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> set[str]:
        return {p.parent.name + p.name for p in (self.root / "sha256").glob("??/*") if p.is_file()}

    def collect_orphans(self, referenced: set[str]) -> int:
        """Delete every blob outside ``referenced``, here and on the artifact store; the caller holds ``lock``."""
        orphans = self.digests() - referenced
        for digest in orphans:
            self.delete(digest)
        if self.mirror is not None:
            stored = {p.replace("/", "") for p in self.mirror.sizes("blobs/sha256")}
            stray = sorted(d for d in stored - referenced if DIGEST.fullmatch(d))
            self.mirror.delete([self._key(d) for d in stray])
            orphans |= set(stray)
        return len(orphans)

    def local(self, digest: str) -> tuple[Path, bool]:
        """The blob's path here, fetched from the artifact store (checked against ``digest``) when missing; and
        whether it was fetched."""
        path = self.path(digest)
        if path.is_file():
            if self.mirror is not None:  # the cache's recency: mtime, since atime is often not kept
                with contextlib.suppress(OSError):
                    os.utime(path)
            return path, False
        if self.mirror is None:
            raise BarFedError("BLOB_MISSING", f"blob {digest} is not in {self.root}; restore it from a backup.")
        staging = self.root / ".staging" / f"fetch-{digest[:16]}-{os.getpid()}-{threading.get_ident()}"
        self.mirror.get_file(self._key(digest), staging, digest)
        try:
            return self._place(staging, digest), True  # it came from the store: nothing to upload
        finally:
            staging.unlink(missing_ok=True)

    def trim(self) -> int:
        """Remove the least recently used blobs until the cache fits ``cache_bytes`` (only with an artifact store,
        which keeps them all); returns how many went. Hard links already made from them keep their bytes."""
        if self.mirror is None or self.cache_bytes is None:
            return 0
        files = []
        for path in (self.root / "sha256").glob("??/*"):
            with contextlib.suppress(FileNotFoundError):  # another thread's trim was first
                files.append((path.stat(), path))
        total, removed = sum(st.st_size for st, _ in files), 0
        for st, path in sorted(files, key=lambda item: item[0].st_mtime):
            if total <= self.cache_bytes:
                break
            self.upload(path, path.parent.name + path.name)  # a blob from before the store may be the only copy
            path.unlink(missing_ok=True)
            total, removed = total - st.st_size, removed + 1
        return removed

    def materialize(self, files: dict[str, str], target: Path) -> Path:
        """A directory whose ``path`` entries are hard links to the blobs ``files`` maps them to."""
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        fetched = False
        for relative, digest in files.items():
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            for _attempt in range(3):  # another thread's trim may remove the blob between fetch and link
                source, came = self.local(digest)
                fetched |= came
                try:
                    os.link(source, destination)
                    break
                except FileNotFoundError:
                    continue
                except OSError:
                    with contextlib.suppress(FileNotFoundError):
                        shutil.copy2(source, destination)
                        break
            else:
                raise BarFedError("BLOB_MISSING", f"blob {digest} kept disappearing from {self.root}; try again.")
        if fetched:  # the cache grew: bring it back within its size
            self.trim()
        return target
