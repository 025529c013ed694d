"""`parse_chunk` reads exactly what protobuf's parser reads from the same bytes, and refuses what it refuses."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.chunk_wire import ChunkView, encode_chunk, parse_chunk
from protocol.v1 import barfed_pb2 as pb


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = varint(number << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload  # fixed widths: payload holds the bytes


def protobuf(raw: bytes) -> ChunkView | None:
    try:
        chunk = pb.Chunk.FromString(raw)
    except DecodeError:
        return None
    return ChunkView(chunk.session_id, chunk.path, chunk.offset, memoryview(chunk.data))


def ours(raw: bytes) -> ChunkView | None:
    try:
        return parse_chunk(raw)
    except DecodeError:
        return None


def same(raw: bytes) -> None:
    theirs, mine = protobuf(raw), ours(raw)
    if theirs is None or mine is None:
        assert theirs is None and mine is None, (raw[:80], theirs, mine)
        return
    assert (mine.session_id, mine.path, mine.offset, bytes(mine.data)) == (
        theirs.session_id,
        theirs.path,
        theirs.offset,
        bytes(theirs.data),
    )


def test_a_real_chunk_reads_back_with_its_data_in_place():
    data = bytes(range(256)) * 4096
    raw = pb.Chunk(session_id="4c1e0a3e-0000-4000-8000-000000000000", path="model.safetensors", offset=7, data=data)
    raw = raw.SerializeToString()
    chunk = parse_chunk(raw)
    assert (chunk.session_id, chunk.path, chunk.offset) == (
        "4c1e0a3e-0000-4000-8000-000000000000",
        "model.safetensors",
        7,
    )
    assert chunk.data == data and chunk.data.obj is raw  # a view of the received bytes, not a copy
    assert parse_chunk(b"") == ChunkView() and bytes(parse_chunk(b"").data) == b""


@pytest.mark.parametrize(
    "raw",
    [
        field(1, 2, b"a") + field(1, 2, b"b"),  # the last occurrence wins
        field(3, 0, 2**64 - 1) + field(3, 0, 5),
        field(3, 0, 2**70),  # a varint wider than 64 bits keeps its low 64
        field(4, 0, 9) + field(3, 2, b"xx") + field(1, 0, 3),  # a known number with another wire type is unknown
        field(9, 2, b"unknown") + field(12, 5, b"abcd") + field(13, 1, b"abcdefgh") + field(2, 2, b"p"),
        field(2, 2, b"\xff\xfe"),  # not UTF-8
        field(1, 2, "é".encode()),
        field(0, 0, 1),  # field number 0
        field(4, 2, b"data")[:-1],  # truncated
        varint(4 << 3 | 2) + varint(2**40),  # a length past the end
        b"\x80" * 11,  # a varint past 10 bytes
        field(5, 6, b""),  # wire types 6 and 7 do not exist
        field(5, 7, b""),
        field(12, 5, b"ab"),  # fixed widths past the end
        field(13, 1, b"abcdef"),
        varint(2**32 + 8) + varint(1),  # a tag past 32 bits
        varint((2**29 - 1) << 3) + varint(1),  # the highest field number
    ],
)
def test_edges_read_as_protobuf_reads_them(raw):
    same(raw)


def test_a_flood_of_unknown_fields_is_refused_at_once():
    flood = field(5, 0, 1) * (4 * 1024**2)  # 8 MiB, the service port's message limit: protobuf skips them all
    assert protobuf(flood[:128]) is not None
    with pytest.raises(DecodeError, match="more than 64 fields"):
        parse_chunk(flood)  # after 65 fields, not 4 million
    with pytest.raises(DecodeError, match="more than 64 fields"):
        parse_chunk(field(5, 0, 1) * 64 + field(4, 2, b"data"))
    assert bytes(parse_chunk(field(5, 0, 1) * 63 + field(4, 2, b"data")).data) == b"data"


def test_groups_are_refused():
    group = varint(7 << 3 | 3) + varint(7 << 3 | 4)
    assert protobuf(group + field(2, 2, b"p")) is not None  # protobuf skips an unknown group
    with pytest.raises(DecodeError, match="wire type 3"):
        parse_chunk(group + field(2, 2, b"p"))


FIELDS = st.one_of(
    st.tuples(st.integers(1, 20), st.just(0), st.integers(0, 2**70)).map(lambda f: field(*f)),
    st.tuples(st.integers(1, 20), st.just(2), st.binary(max_size=40)).map(lambda f: field(*f)),
    st.tuples(st.integers(1, 20), st.just(2), st.text(max_size=10).map(str.encode)).map(lambda f: field(*f)),
    st.tuples(st.integers(1, 20), st.just(5), st.binary(min_size=4, max_size=4)).map(lambda f: field(*f)),
    st.tuples(st.integers(1, 20), st.just(1), st.binary(min_size=8, max_size=8)).map(lambda f: field(*f)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(FIELDS, max_size=8).map(b"".join), st.integers(0, 2**16), st.binary(max_size=3))
def test_generated_bytes_read_as_protobuf_reads_them(raw, cut, noise):
    same(raw)
    cut %= len(raw) + 1
    for mangled in (raw[:cut], raw[:cut] + noise + raw[cut:]):
        if not _has_group_tag(mangled):
            same(mangled)


def _has_group_tag(raw: bytes) -> bool:
    """Whether protobuf would meet a group where we refuse one (so only a refusal on our side may differ)."""
    try:
        parse_chunk(raw)
    except DecodeError as exc:
        return "wire type 3" in str(exc) or "wire type 4" in str(exc)
    return False


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40), st.integers(0, 2**64 - 1), st.binary(min_size=1, max_size=300))
def test_encoded_chunks_read_back_through_protobuf_and_ours(session_id, path, offset, data):
    raw = encode_chunk(session_id, path, offset, data)
    chunk = pb.Chunk.FromString(raw)
    assert (chunk.session_id, chunk.path, chunk.offset, chunk.data) == (session_id, path, offset, data)
    assert raw == chunk.SerializeToString()  # byte for byte what protobuf would have sent
    mine = parse_chunk(raw)
    assert (mine.session_id, mine.path, mine.offset, bytes(mine.data)) == (session_id, path, offset, data)


@pytest.mark.parametrize("size", [127, 128, 16383, 16384, 1024**2])
def test_encoded_lengths_at_varint_boundaries(size):
    data = b"\x5a" * size
    assert (
        encode_chunk("s", "model.safetensors", 3, data)
        == pb.Chunk(session_id="s", path="model.safetensors", offset=3, data=data).SerializeToString()
    )
