"""The pull's sink: every block written and hashed in order while the caller refills its buffers."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest

from barfed.pull_sink import HashingSink


def test_blocks_from_two_reused_buffers_are_written_and_hashed_in_order(tmp_path):
    buffers = (bytearray(4096), bytearray(4096))
    expected, digest = hashlib.sha256(), hashlib.sha256()
    with open(tmp_path / "part", "wb") as out, HashingSink(out, digest) as sink:
        for i in range(200):
            block = buffers[i % 2]
            block[:] = os.urandom(4096)  # the body refills a buffer two blocks after it handed it over
            expected.update(block)
            sink.put(memoryview(block))
        sink.finish()
    assert digest.hexdigest() == expected.hexdigest()
    assert hashlib.sha256((tmp_path / "part").read_bytes()).hexdigest() == expected.hexdigest()


def test_a_failed_write_stops_the_download_with_its_error(tmp_path):
    class FullDisk:
        def write(self, _block):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

        def fileno(self):
            raise AssertionError("nothing is synced after a failed write")

    with pytest.raises(OSError) as err, HashingSink(FullDisk(), hashlib.sha256()) as sink:
        for _ in range(3):
            sink.put(b"x" * 1024)
        sink.finish()
    assert err.value.errno == errno.ENOSPC
