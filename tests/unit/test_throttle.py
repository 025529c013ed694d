"""The node's speed cap (``max_bytes_per_s``): an upload runs near the cap, not far below it."""

from __future__ import annotations

import os
import time

from contributor_node.client import CoordinatorClient
from contributor_node.home import NodeHome
from contributor_node.settings import NodeSettings
from contributor_node.throttle import Throttle
from contributor_node.upload import upload
from protocol.v1 import barfed_pb2 as pb

CAP = 8 * 1024 * 1024
SIZE = 2 * 1024 * 1024
MAX_CHUNK = 128 * 1024  # the coordinator's; 16 chunks


class Coordinator:
    """Stands in for the network only: the real chunker feeds the upload's pacing, as in `CoordinatorClient.submit`."""

    def __init__(self) -> None:
        self.sent = 0

    def submit(self, package_dir, *, chunk_bytes, on_chunk, session, on_session):
        files = [pb.FileProgress(path=p.name, size=p.stat().st_size) for p in sorted(package_dir.iterdir())]
        progress = pb.UploadProgress(session_id="s", files=files)
        chunk_bytes = min(chunk_bytes or MAX_CHUNK, MAX_CHUNK)
        for chunk in CoordinatorClient._chunks(package_dir, "s", progress, chunk_bytes, on_chunk):
            self.sent += len(pb.Chunk.FromString(chunk).data)
        return "submission"


def test_an_upload_without_chunk_bytes_runs_near_its_cap(tmp_path):
    """Each chunk is charged as its own bytes (it was charged as the rest of its file: 50 MB/s gave 0.16 MB/s)."""
    settings = NodeSettings(
        home=tmp_path, org_id="acme", service_address="127.0.0.1:1", enroll_address="127.0.0.1:2", max_bytes_per_s=CAP
    )
    assert settings.chunk_bytes is None
    package = NodeHome(tmp_path).package("math", 1)
    package.mkdir(parents=True)
    (package / "model.safetensors").write_bytes(os.urandom(SIZE))
    seen: list[int] = []
    coordinator = Coordinator()
    started = time.monotonic()
    assert upload(settings, coordinator, lambda call: call(), "math", 1, on_sent=seen.append) == "submission"
    rate = coordinator.sent / (time.monotonic() - started)
    assert coordinator.sent == SIZE and seen[-1] == SIZE
    assert 0.5 * CAP < rate <= CAP, f"{rate / 1e6:.2f} MB/s against a cap of {CAP / 1e6:.2f} MB/s"


def test_the_throttle_keeps_the_average_at_the_cap():
    throttle = Throttle(CAP)
    started = time.monotonic()
    for _ in range(8):
        throttle.wait(MAX_CHUNK)
    elapsed = time.monotonic() - started
    assert 8 * MAX_CHUNK / CAP <= elapsed < 8 * MAX_CHUNK / CAP + 0.5


def test_no_cap_never_waits():
    started = time.monotonic()
    Throttle(None).wait(10**12)
    assert time.monotonic() - started < 0.05
