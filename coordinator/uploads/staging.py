"""Staged bytes of uploads under way: where they live, the sha256 of their durable prefixes, and their removal.

Removal is a rename into ``staging/.discarded`` (the bytes are garbage from that moment) and a delete on a
thread of its own: freeing a GiB just written takes ext4 most of a second (0.4-0.8 s measured), which a
commit's caller need not wait for; what a stopped process left there is emptied at the next start.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HASH_BLOCK = 4 * 1024**2
DISCARDED = ".discarded"  # staging/.discarded/<session>: staged files on their way out


def hash_prefix(path: Path, length: int):
    """sha256 state of the first ``length`` bytes of ``path`` (read from disk)."""
    hasher = hashlib.sha256()
    if length and path.exists():
        with open(path, "rb") as fh:
            remaining = length
            while remaining > 0 and (block := fh.read(min(HASH_BLOCK, remaining))):
                hasher.update(block)
                remaining -= len(block)
    return hasher


class _Hashers:
    """sha256 state of each staged file's durable prefix, kept while this process lives (copies in, copies out)."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, str], tuple[int, object]] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str, path: str, staged: Path, length: int):
        with self._lock:
            position, hasher = self._state.get((session_id, path), (-1, None))
            if position == length:
                return hasher.copy()
        return hash_prefix(staged, length)

    def put(self, session_id: str, path: str, length: int, hasher) -> None:
        with self._lock:
            self._state[(session_id, path)] = (length, hasher.copy())

    def drop(self, session_id: str) -> None:
        with self._lock:
            for key in [k for k in self._state if k[0] == session_id]:
                del self._state[key]


class Staging:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._discarded = root / DISCARDED
        shutil.rmtree(self._discarded, ignore_errors=True)  # left by a process that stopped before deleting them
        self._discarded.mkdir(parents=True, exist_ok=True)
        self._hashers = _Hashers()
        self._deleter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="staging-delete")

    def path(self, session_id: str, path: str) -> Path:
        return self.root / session_id / path

    def hasher(self, session_id: str, path: str, length: int):
        """sha256 state after the first ``length`` bytes of a staged file (cached when it is the durable one)."""
        return self._hashers.get(session_id, path, self.path(session_id, path), length)

    def remember(self, session_id: str, path: str, length: int, hasher) -> None:
        """``hasher`` is the state after ``length`` durable bytes."""
        self._hashers.put(session_id, path, length, hasher)

    def digest(self, session_id: str, path: str, length: int) -> str:
        """sha256 of the staged prefix (from the cached hash state when ``length`` is the durable length)."""
        return self.hasher(session_id, path, length).hexdigest()

    def digest_from_disk(self, session_id: str, path: str, length: int) -> str:
        return hash_prefix(self.path(session_id, path), length).hexdigest()

    def discard(self, session_id: str) -> None:
        """Take a session's staged files out of the way at once and delete them on the deleter thread."""
        self._hashers.drop(session_id)
        target = self._discarded / session_id
        try:
            os.replace(self.root / session_id, target)
        except FileNotFoundError:
            return
        except OSError:  # the way out is blocked: delete in place
            shutil.rmtree(self.root / session_id, ignore_errors=True)
            return
        self._deleter.submit(shutil.rmtree, target, ignore_errors=True)

    def close(self) -> None:
        """Wait for the deletions under way."""
        self._deleter.shutdown(wait=True)
