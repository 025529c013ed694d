"""The node checks its package on the bytes it sends, including across resumed uploads."""

from __future__ import annotations

import hashlib
import os

import pytest

from contributor_node.outgoing import OutgoingDigests
from protocol.errors import BarFedError


@pytest.fixture
def package(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(os.urandom(300_000))
    return tmp_path


def _declared(package, sha256=None):
    data = (package / "model.safetensors").read_bytes()
    return {"model.safetensors": (len(data), sha256 or hashlib.sha256(data).hexdigest())}


def _send(outgoing, package, ranges):
    data = (package / "model.safetensors").read_bytes()
    for start, end in ranges:
        outgoing.sent("model.safetensors", start, data[start:end])


@pytest.mark.parametrize(
    "ranges",
    [
        [(0, 100_000), (100_000, 200_000), (200_000, 300_000)],  # in one go
        [(0, 150_000), (100_000, 300_000)],  # resumed from an earlier durable offset: resent bytes
        [(120_000, 300_000)],  # resumed by a new process: the coordinator already had the start
        [(0, 50_000)],  # the rest was sent by an earlier process
        [],  # everything was already uploaded
    ],
)
def test_a_faithful_package_passes_however_it_was_sent(package, ranges):
    outgoing = OutgoingDigests(package, _declared(package))
    _send(outgoing, package, ranges)
    outgoing.check()


def test_a_file_changed_after_building_is_refused_before_commit(package):
    outgoing = OutgoingDigests(package, _declared(package, sha256="0" * 64))
    _send(outgoing, package, [(0, 300_000)])
    with pytest.raises(BarFedError) as err:
        outgoing.check()
    assert err.value.code == "PACKAGE_FILE_DIGEST"


def test_a_file_shorter_than_declared_is_refused(package):
    declared = _declared(package)
    (package / "model.safetensors").write_bytes((package / "model.safetensors").read_bytes()[:1000])
    outgoing = OutgoingDigests(package, declared)
    with pytest.raises(BarFedError) as err:
        outgoing.check()
    assert err.value.code == "PACKAGE_FILE_DIGEST"
