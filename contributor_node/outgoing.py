"""The node's check of its own package, made on the bytes it sends: every file against its declared sha256.

Hashing what goes out reads the package once instead of twice (on a small machine hashing 1 GiB costs
about as much as sending it). A file counts as checked only once it was hashed from its first byte to its
declared size: bytes a resumed upload does not send again (the coordinator holds them durably) are read
back from the file, and `check` hashes whatever is still missing, before the node commits.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from protocol.errors import BarFedError
from protocol.package import HASH_CHUNK


class OutgoingDigests:
    def __init__(self, package: Path, declared: dict[str, tuple[int, str]]) -> None:
        """``declared``: path -> (size, sha256) as the upload declared them."""
        self.package, self.declared = Path(package), declared
        self._hashed = {path: (0, hashlib.sha256()) for path in declared}  # bytes hashed so far, and the state
        self._lock = threading.Lock()  # an abandoned stream's thread may still be sending when the next starts

    def sent(self, path: str, offset: int, data: bytes) -> None:
        """Account for ``data``, sent at ``offset`` of ``path``."""
        with self._lock:
            hashed, hasher = self._hashed[path]
            if offset > hashed:  # the coordinator already had these bytes
                self._hash_file(path, hasher, hashed, offset)
                hashed = offset
            if offset + len(data) > hashed:
                hasher.update(memoryview(data)[hashed - offset :])
                hashed = offset + len(data)
            self._hashed[path] = (hashed, hasher)

    def check(self) -> None:
        """Raise ``PACKAGE_FILE_DIGEST`` unless every file, hashed to its declared size, has its declared sha256."""
        with self._lock:
            for path, (size, sha256) in self.declared.items():
                hashed, hasher = self._hashed[path]
                self._hash_file(path, hasher, hashed, size)
                self._hashed[path] = (max(hashed, size), hasher)
                if hasher.hexdigest() != sha256:
                    raise BarFedError(
                        "PACKAGE_FILE_DIGEST",
                        f"{path} does not match its declared sha256; the package changed after it was built. "
                        "Rebuild it; nothing was committed.",
                    )

    def _hash_file(self, path: str, hasher, start: int, end: int) -> None:
        if end <= start:
            return
        with open(self.package / path, "rb") as fh:
            fh.seek(start)
            remaining = end - start
            while remaining > 0 and (block := fh.read(min(HASH_CHUNK, remaining))):
                hasher.update(block)
                remaining -= len(block)
