"""``Chunk`` messages on the wire without protobuf's copies of their data, on both ends of an upload.

A 1 MiB chunk parsed by protobuf is copied three more times after gRPC hands over its bytes: into the parsed
message, by every read of its ``data`` field, and by the bounds check's ``ListFields``; on the node, the message
and its serialization copy it twice before gRPC does. Uploads are the hottest byte path we have, and those copies
(with the page faults of their fresh buffers) cost the coordinator about half a CPU-second per GiB and the node
about 0.15 (bench/submit_throughput.py, docs/PERFORMANCE.md). So the coordinator reads a chunk's four fields here,
``data`` a memoryview into the received bytes, and the node appends the data to the small fields protobuf
serialized. What is accepted is what protobuf accepts for ``barfed.v1.Chunk``: the last occurrence of a field
wins, unknown fields and fields of an unexpected wire type are skipped, strings must be UTF-8. Refused where
protobuf would skip: groups (a deprecated encoding no client of ours sends) and more than `MAX_FIELDS` fields (a
Chunk has 4; read in Python, 8 MiB of 2-byte unknown fields would cost seconds of CPU per message).
tests/unit/test_chunk_wire.py holds both directions to protobuf's own parser.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from protocol.v1 import barfed_pb2 as pb

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
DATA_TAG = bytes([4 << 3 | LENGTH])
UINT64 = 2**64 - 1
TEXT = {1: "session_id", 2: "path"}
EMPTY = memoryview(b"")
MAX_FIELDS = 64


@dataclass(frozen=True, slots=True)
class ChunkView:
    """The fields of a ``barfed.v1.Chunk``; ``data`` is a view of the message's own bytes."""

    session_id: str = ""
    path: str = ""
    offset: int = 0
    data: memoryview = EMPTY

    def fields(self) -> list[tuple[str, object]]:
        """(name, value) of each field, as the bounds check reads a message's."""
        return [("session_id", self.session_id), ("path", self.path), ("offset", self.offset), ("data", self.data)]


def _varint(raw: bytes, at: int) -> tuple[int, int]:
    """The varint at ``at`` and the position after it (at most 10 bytes, as protobuf allows)."""
    value = shift = 0
    for position in range(at, min(at + 10, len(raw))):
        byte = raw[position]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position + 1
        shift += 7
    raise DecodeError("a varint runs past the message or past 10 bytes")


def _text(raw: memoryview, what: str) -> str:
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{what} is not valid UTF-8") from None


def parse_chunk(raw: bytes) -> ChunkView:
    """A ``Chunk`` from its serialized bytes, or `DecodeError` where protobuf would refuse them."""
    view = memoryview(raw)
    fields: dict[int, object] = {}
    at, end, count = 0, len(raw), 0
    while at < end:
        count += 1
        if count > MAX_FIELDS:
            raise DecodeError(f"more than {MAX_FIELDS} fields; a Chunk has 4")
        key, at = _varint(raw, at)
        number, wire = key >> 3, key & 7
        if number == 0 or key > 0xFFFFFFFF:
            raise DecodeError(f"field number {number} is not valid")
        if wire == VARINT:
            value, at = _varint(raw, at)
            if number == 3:
                fields[3] = value & UINT64
        elif wire == LENGTH:
            length, at = _varint(raw, at)
            if length > end - at:
                raise DecodeError("a length-delimited field runs past the message")
            if number == 4:
                fields[4] = view[at : at + length]
            elif number in TEXT:  # every occurrence must be UTF-8, not only the last
                fields[number] = _text(view[at : at + length], TEXT[number])
            at += length
        elif wire in (FIXED64, FIXED32):
            at += 8 if wire == FIXED64 else 4
            if at > end:
                raise DecodeError("a fixed-width field runs past the message")
        else:
            raise DecodeError(f"wire type {wire} is not accepted in a Chunk")
    return ChunkView(
        session_id=fields.get(1, ""),
        path=fields.get(2, ""),
        offset=fields.get(3, 0),
        data=fields.get(4, EMPTY),
    )


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_chunk(session_id: str, path: str, offset: int, data: bytes) -> bytes:
    """A serialized ``Chunk``: protobuf's bytes for the small fields, then ``data`` copied once, as field 4."""
    head = pb.Chunk(session_id=session_id, path=path, offset=offset).SerializeToString()
    return b"".join((head, DATA_TAG, _varint_bytes(len(data)), data))


def write_chunks(channel: grpc.Channel) -> grpc.StreamUnaryMultiCallable:
    """``Federation.WriteChunks`` sending `encode_chunk`'s bytes as they are (the stub's takes ``Chunk`` messages)."""
    return channel.stream_unary("/barfed.v1.Federation/WriteChunks", response_deserializer=pb.UploadProgress.FromString)
