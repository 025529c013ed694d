"""Where `barfed pull` puts a file's blocks: hashed and written on a thread while the next block arrives.

On two cores, sha256 and the write of one block (hashlib and file writes release the GIL) run beside TLS
decryption of the next instead of after it, and what was written is synced every 128 MiB on another thread so
the closing fsync finds little left: together about 1 s of a 1 GiB pull's wall time (bench/download_throughput.py).
A block handed over is a view the body will refill two blocks later, so `put` waits for the previous block first.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from bar_model.durable import Writeback


class HashingSink:
    def __init__(self, out: BinaryIO, digest) -> None:
        self.out, self.digest = out, digest
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pull-sink")
        self._writeback = Writeback()
        self._pending: Future | None = None
        self._unsynced = 0

    def put(self, block: memoryview | bytes) -> None:
        self._wait()
        self._pending = self._pool.submit(self._take, block)

    def _take(self, block: memoryview | bytes) -> None:
        self.out.write(block)
        self.digest.update(block)
        self._unsynced += len(block)
        if self._unsynced >= Writeback.EVERY_BYTES:
            self.out.flush()
            self._writeback.start(self.out.fileno())
            self._unsynced = 0

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # a failed write (a full disk) stops the download here

    def finish(self) -> None:
        """Everything handed over is written, hashed and on disk."""
        self._wait()
        self.out.flush()
        self._writeback.close()
        os.fsync(self.out.fileno())

    def __enter__(self) -> HashingSink:
        return self

    def __exit__(self, *_exc) -> None:
        self._pool.shutdown(wait=True)  # never leave a thread writing into a file the caller closes
        self._writeback.close(check=False)  # `finish` reported its errors; on an error the first one is reported
