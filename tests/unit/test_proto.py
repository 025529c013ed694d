"""The committed gRPC stubs are what the .proto files generate; no message can carry executable content."""

from __future__ import annotations

import pytest

from protocol.generate import ROOT, generate
from protocol.v1 import barfed_pb2


def test_committed_stubs_are_current(tmp_path):
    for fresh in generate(tmp_path):
        committed = ROOT / fresh.relative_to(tmp_path)
        assert committed.is_file(), f"{committed.name} is not committed; run `python -m protocol.generate`"
        assert committed.read_bytes() == fresh.read_bytes(), (
            f"{committed.name} is stale; run `python -m protocol.generate` and commit the result"
        )


def test_package_is_versioned_and_service_complete():
    service = barfed_pb2.DESCRIPTOR.services_by_name["Federation"]
    assert barfed_pb2.DESCRIPTOR.package == "barfed.v1"
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods["FetchAnchor"] == (False, True)
    assert methods["WriteChunks"] == (True, False)
    assert methods["WatchReleases"] == (False, True)
    assert {"Enroll", "GetEnrollment", "CreateUpload", "GetUpload", "CommitUpload", "GetSubmission"} <= set(methods)


@pytest.mark.parametrize("message", list(barfed_pb2.DESCRIPTOR.message_types_by_name.values()))
def test_no_field_carries_opaque_objects(message):
    """bytes appear only as file chunk payloads; no Any, no Struct (free-form) fields."""
    for field in message.fields:
        if field.message_type is not None:
            assert field.message_type.full_name.startswith("barfed.v1."), field.full_name
        if field.type == field.TYPE_BYTES:
            assert field.name == "data" and message.name in ("Chunk", "FileChunk"), field.full_name


def test_a_submission_carries_its_experts_status_now():
    """`barfed node status` shows an operator's later QUARANTINED (…), not only the ACCEPTED verdict."""
    field = barfed_pb2.Submission.DESCRIPTOR.fields_by_name["expert_status"]
    assert field.type == field.TYPE_STRING
