"""One stream of chunks into staging; progress becomes durable at checkpoints and at close.

A checkpoint fsyncs what was written and only then records those lengths (and hash states) as durable.
It runs on its own thread while the next chunks arrive, so the disk works while the network does; the
next checkpoint waits for the previous one, so durable progress trails the stream by at most two
intervals. ``write`` and ``close`` are serialised, so closing a stream whose client vanished waits for
the chunk being written and records it together with its hash.

The writer knows only what it is handed: the staging area, a way to record durable lengths, and what to
call when the upload must be discarded and when the stream is over (the session's owner releases its claim).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from coordinator.state.models import UploadFile
from coordinator.uploads.staging import Staging
from protocol.errors import BarFedError


class ChunkWriter:
    def __init__(
        self,
        session_id: str,
        files: list[UploadFile],
        staging: Staging,
        *,
        chunk_bytes: int,
        sync_every_bytes: int,
        record_durable: Callable[[dict[str, int]], None],
        discard: Callable[[str], None],
        release: Callable[[], None],
    ) -> None:
        self.session_id, self.staging = session_id, staging
        self.chunk_bytes, self.sync_every_bytes = chunk_bytes, sync_every_bytes
        self._record_durable, self._discard, self._release = record_durable, discard, release
        self.sizes = {f.path: f.size for f in files}
        self.length = {f.path: f.committed for f in files}  # bytes written (durable or not)
        self.durable = dict(self.length)
        self._handles: dict[str, object] = {}
        self._hash: dict[str, object] = {}
        self._unsynced = 0
        self._io = threading.Lock()
        self._closed = False
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-sync")
        self._checkpointing: Future | None = None
        self.failed: str | None = None  # set when the upload must be discarded rather than resumed

    def _handle(self, path: str):
        if path not in self._handles:
            staged = self.staging.path(self.session_id, path)
            staged.parent.mkdir(parents=True, exist_ok=True)
            fh = open(staged, "r+b" if staged.exists() else "w+b")  # noqa: SIM115 (closed in close())
            fh.truncate(self.durable[path])  # bytes past the durable length were never acknowledged
            fh.seek(self.durable[path])
            self._handles[path] = fh
            self._hash[path] = self.staging.hasher(self.session_id, path, self.durable[path])
        return self._handles[path]

    def write(self, path: str, offset: int, data: bytes) -> None:
        with self._io:
            if self._closed:
                raise BarFedError("SESSION_CLOSED", "this stream is closed.")
            if path not in self.sizes:
                raise BarFedError("UNKNOWN_FILE", f"{path[:200]!r} was not declared in this upload.")
            if not data or len(data) > self.chunk_bytes:
                raise BarFedError(
                    "CHUNK_TOO_LARGE" if data else "EMPTY_CHUNK",
                    f"chunks carry 1 to {self.chunk_bytes} bytes; this one has {len(data)}.",
                )
            if offset != self.length[path]:
                raise BarFedError(
                    "OFFSET_MISMATCH",
                    f"{path} continues at offset {self.length[path]}, not {offset}; ask for the upload's progress "
                    "and resume from there.",
                )
            if offset + len(data) > self.sizes[path]:
                self.failed = "SIZE_EXCEEDED"
                raise BarFedError(
                    "SIZE_EXCEEDED",
                    f"{path} would grow past its declared {self.sizes[path]} bytes; the upload was discarded, "
                    "declare the true sizes in a new upload.",
                )
            fh = self._handle(path)
            try:
                fh.write(data)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                self._drop_to_durable(path)
                raise BarFedError(
                    "INSUFFICIENT_STORAGE",
                    f"the coordinator's disk filled while writing {path}; the upload is kept, ask for its progress "
                    "and resume from there once the operator has freed space.",
                ) from None
            self._hash[path].update(data)
            self.length[path] += len(data)
            self._unsynced += len(data)
            if self._unsynced >= self.sync_every_bytes:
                self._wait_for_checkpoint()
                self._checkpointing = self._syncer.submit(self._checkpoint, self._written())
                self._unsynced = 0

    def _drop_to_durable(self, path: str) -> None:
        """Forget what was written to ``path`` past its durable length (a failed write left it partial)."""
        self._wait_for_checkpoint()
        fh = self._handles.pop(path)
        self._hash.pop(path, None)
        with contextlib.suppress(OSError):  # flushing what is buffered may fail again; truncation removes it
            fh.close()
        staged = self.staging.path(self.session_id, path)
        if staged.exists():
            os.truncate(staged, self.durable[path])
        self.length[path] = self.durable[path]

    def _written(self) -> dict[str, tuple[int, int, object]]:
        """path -> (file descriptor, length, hash state) of what was written since the last checkpoint."""
        written = {}
        for path, length in self.length.items():
            if length != self.durable[path]:
                fh = self._handles[path]
                fh.flush()  # handed to the OS, so an fsync covers it
                written[path] = (fh.fileno(), length, self._hash[path].copy())
        return written

    def _checkpoint(self, written: dict[str, tuple[int, int, object]]) -> None:
        """fsync ``written`` and only then record it as durable (what a resuming client may rely on)."""
        if not written:
            return
        for fd, _length, _hasher in written.values():
            os.fsync(fd)
        self._record_durable({path: length for path, (_fd, length, _hasher) in written.items()})
        for path, (_fd, length, hasher) in written.items():
            self.durable[path] = length
            self.staging.remember(self.session_id, path, length, hasher)

    def _wait_for_checkpoint(self) -> None:
        """Let the checkpoint in flight finish (raising its error, if it failed)."""
        checkpointing, self._checkpointing = self._checkpointing, None
        if checkpointing is not None:
            checkpointing.result()

    def close(self) -> dict[str, int]:
        with self._io:
            if self._closed:
                return dict(self.durable)
            self._closed = True
            try:
                self._wait_for_checkpoint()
                if self.failed is None:
                    self._checkpoint(self._written())
                else:  # a lying upload is discarded, not kept for resumption
                    self._discard(self.failed)
            finally:
                self._syncer.shutdown(wait=True)  # no fsync may still be using a handle
                for fh in self._handles.values():
                    fh.close()
                self._release()
        return dict(self.durable)
