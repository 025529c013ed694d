"""Directories that appear whole or not at all: nothing half-written is ever visible under the final name.

A directory is built under a hidden staging name beside its final one, fsynced, then renamed; a staging
directory a killed process left behind is removed on the next try. Plain files and os calls only (no torch),
so the node's network commands can use it without loading an ML library.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from protocol.errors import BarFedError


def fsync_file(path: Path | str) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` survive a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    for root, _dirs, files in os.walk(directory):
        for name in files:
            fsync_file(os.path.join(root, name))
    fsync_dir(directory)


class Writeback:
    """Syncs what was written so far on a thread while the writing goes on, so the caller's final fsync of the
    directory finds little left to do (the disk works while the CPU copies, instead of after it)."""

    EVERY_BYTES = 128 * 1024**2  # what a writer lets pass between two calls to `start`

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="writeback")
        self._syncs: list[Future] = []

    def start(self, fd: int, *, unless_busy: bool = True) -> None:
        if unless_busy and self._syncs and not self._syncs[-1].done():
            return
        self._syncs.append(self._pool.submit(_sync_and_close, os.dup(fd)))

    def close(self, *, check: bool = True) -> None:
        """Wait for the syncs in flight; with ``check``, a failed one (EIO, ENOSPC) fails the write."""
        self._pool.shutdown(wait=True)
        for sync in self._syncs if check else ():
            sync.result()

    def __enter__(self) -> Writeback:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        self.close(check=exc_type is None)  # an error already on its way is the one to report


def _sync_and_close(fd: int) -> None:
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def staging_path(final: Path) -> Path:
    return final.parent / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"


def remove_stale_staging(final: Path) -> None:
    """Delete staging directories that a killed process left beside ``final``."""
    for stale in final.parent.glob(f".{final.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(final: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory; on success it becomes ``final`` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not replace:
        raise BarFedError("OUTPUT_EXISTS", f"{final} already exists; choose another path or remove it first.")
    remove_stale_staging(final)
    staging = staging_path(final)
    staging.mkdir()
    try:
        yield staging
        fsync_tree(staging)
        if final.exists():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
