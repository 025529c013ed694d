"""Differential fuzz of our safetensors header and layout reader against stock safetensors.

Generated files, valid and broken (overlapping or gapped offsets, bytes after the last tensor, non-integer,
negative, huge or absurd shapes, unknown dtypes, lying lengths, flipped header bytes): whatever stock
safetensors refuses, ours refuses with ``BAD_SAFETENSORS`` (never another exception), and nothing ours
accepts has a byte outside its tensors. What both accept reads the same bytes.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import pytest
import safetensors
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from bar_model.checkpoint import DTYPES, SINGLE_FILE, SafetensorsCheckpoint
from protocol.errors import BarFedError

ITEMSIZE = {name: dtype.itemsize for name, dtype in DTYPES.items()} | {"U16": 2, "U32": 4, "U64": 8, "C64": 8}
RAW = "\x00raw:"  # a string standing for a JSON token written verbatim (1e999, 2.9, NaN, ...)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)
# "__metadata__" is the header's reserved key: stock safetensors writes a tensor of that name but cannot read it back
tensor_names = names.filter(lambda name: name != "__metadata__")
shapes = st.lists(st.integers(0, 5), max_size=3)
tensors = st.dictionaries(names, st.tuples(st.sampled_from(sorted(ITEMSIZE)), shapes), max_size=5)


def _encode(header: dict) -> bytes:
    text = json.dumps(header)
    for token in ("1e999", "2.9", "2.0", "-1", "NaN", "true", "18446744073709551616", "-0"):
        text = text.replace(json.dumps(RAW + token), token)
    return text.encode()


def _valid(spec: dict) -> tuple[dict, bytearray]:
    header, position = {}, 0
    for name, (dtype, shape) in spec.items():
        size = ITEMSIZE[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [position, position + size]}
        position += size
    return header, bytearray(bytes(range(256)) * (position // 256 + 1))[:position]


MUTATIONS = (
    "none",
    "trailing",
    "overlap",
    "gap",
    "odd_shape",
    "bad_dtype",
    "truncate",
    "reverse_offsets",
    "flip",
    "length",
    "metadata",
    "extra_field",
    "whitespace",
    "duplicate",
)


@st.composite
def files(draw) -> bytes:
    """A safetensors file built from a valid layout, then (maybe) broken in one of many ways."""
    header, data = _valid(draw(tensors))
    mutation = draw(st.sampled_from(MUTATIONS))
    keys = list(header)
    if mutation == "trailing":
        data += draw(st.binary(min_size=1, max_size=64))
    elif mutation == "overlap" and len(keys) >= 2:
        a, b = draw(st.permutations(keys))[:2]
        header[b]["data_offsets"] = list(header[a]["data_offsets"])
    elif mutation == "gap" and keys:
        shift = draw(st.integers(1, 16))
        for key in keys[draw(st.integers(0, len(keys) - 1)) :]:
            header[key]["data_offsets"] = [o + shift for o in header[key]["data_offsets"]]
        data += b"\x00" * shift
    elif mutation == "odd_shape" and keys:
        token = draw(st.sampled_from(("1e999", "2.9", "2.0", "-1", "NaN", "true", "18446744073709551616", "-0")))
        shape = header[draw(st.sampled_from(keys))]["shape"]
        shape.insert(draw(st.integers(0, len(shape))), RAW + token)
    elif mutation == "bad_dtype" and keys:
        header[draw(st.sampled_from(keys))]["dtype"] = draw(st.sampled_from(("Q9", "f32", "", "F8_E8M0", "I4")))
    elif mutation == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif mutation == "reverse_offsets" and keys:
        entry = header[draw(st.sampled_from(keys))]
        entry["data_offsets"] = entry["data_offsets"][::-1]
    elif mutation == "metadata":
        header["__metadata__"] = draw(
            st.sampled_from(({"format": "pt"}, {"n": 1}, "pt", [], {"format": None}, {"a": RAW + "true"}))
        )
    elif mutation == "extra_field" and keys:
        header[draw(st.sampled_from(keys))]["extra"] = 1
    raw = _encode(header)
    if mutation == "whitespace":
        raw = draw(st.sampled_from((b" ", b"", b"\n"))) + raw + b" " * draw(st.integers(0, 9))
    elif mutation == "duplicate" and keys:
        raw = raw[:-1] + b"," + json.dumps({keys[0]: header[keys[0]]}).encode()[1:]
    elif mutation == "flip" and raw:
        raw = bytearray(raw)
        raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
        raw = bytes(raw)
    length = len(raw)
    if mutation == "length":
        length = draw(st.sampled_from((0, 1, length - 1, length + 1, length + 8, 2**63, 2**64 - 1)))
    return struct.pack("<Q", length) + raw + bytes(data)


def _stock(blob: bytes) -> dict[str, bytes] | None:
    """name -> data bytes, as stock safetensors reads the file; None when it refuses it."""
    try:
        return {name: bytes(view["data"]) for name, view in safetensors.deserialize(blob)}
    except Exception:  # stock raises SafetensorError, and others on absurd input: any refusal counts
        return None


def _ours(directory: Path) -> dict[str, bytes] | BarFedError:
    try:
        checkpoint = SafetensorsCheckpoint(directory)
        return {key: checkpoint.tensor(key).reshape(-1).view(torch.uint8).numpy().tobytes() for key in checkpoint}
    except BarFedError as exc:
        return exc


def _covers_exactly(blob: bytes) -> bool:
    """The tensors' byte ranges, read independently of both readers, tile the data section with nothing left."""
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    ranges = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    position = 0
    for begin, end in ranges:
        if begin != position:
            return False
        position = end
    return position == len(blob) - 8 - length


@FUZZ
@given(files())
def test_ours_refuses_whatever_stock_refuses_and_nothing_outside_the_tensors(blob):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / SINGLE_FILE).write_bytes(blob)
        ours = _ours(Path(tmp))
    stock = _stock(blob)
    if isinstance(ours, BarFedError):
        assert ours.code == "BAD_SAFETENSORS", ours
        return
    assert stock is not None, "we accepted a file stock safetensors refuses"
    assert _covers_exactly(blob), "we accepted a file with bytes outside its tensors"
    assert ours == stock, "we read other bytes than stock safetensors"


@FUZZ
@given(st.dictionaries(tensor_names, st.tuples(st.sampled_from(sorted(DTYPES)), shapes), max_size=5), st.booleans())
def test_what_safetensors_writes_we_read(spec, with_metadata):
    tensors_ = {
        name: torch.arange(max(1, torch.Size(shape).numel()))[: torch.Size(shape).numel()]
        .reshape(shape)
        .to(DTYPES[dtype])
        for name, (dtype, shape) in spec.items()
    }
    with tempfile.TemporaryDirectory() as tmp:
        save_file(tensors_, Path(tmp) / SINGLE_FILE, metadata={"format": "pt"} if with_metadata else None)
        checkpoint = SafetensorsCheckpoint(tmp)
        assert set(checkpoint.keys()) == set(tensors_)
        for name, tensor in tensors_.items():
            assert torch.equal(checkpoint.tensor(name), tensor)


@pytest.mark.parametrize(
    "raw,data",
    [
        (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\x00" * 8 + b"\x80\x04pickle"),
        (
            b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
            b"\x00" * 8,
        ),
        (b'{"a":{"dtype":"F32","shape":[2.9],"data_offsets":[0,8]}}', b"\x00" * 8),
        (b'{"a":{"dtype":"F32","shape":[1e999],"data_offsets":[0,8]}}', b"\x00" * 8),
    ],
    ids=["appended pickle", "overlapping offsets", "shape 2.9", "shape 1e999"],
)
def test_the_reported_holes_are_refused(tmp_path, raw, data):
    (tmp_path / SINGLE_FILE).write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    with pytest.raises(BarFedError) as err:
        SafetensorsCheckpoint(tmp_path)
    assert err.value.code == "BAD_SAFETENSORS"
