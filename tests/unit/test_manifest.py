"""expert.json: strict, canonical, and unparseable input only ever raises the project's error."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import BarFedError
from protocol.package import ExpertManifest, PackageFile, canonical_json, parse_manifest


def manifest(**overrides) -> ExpertManifest:
    fields = {
        "org": "acme-labs",
        "domain": "math",
        "version": 3,
        "anchor_fingerprint": "sha256:" + "ab" * 32,
        "stages": ["mid", "sft", "rl"],
        "recipe": {"name": "tiny", "sft": {"steps": 10}},
        "stage_summaries": {"mid": {"steps": 10, "last_loss": 1.5}},
        "eval_scores": {"math": 57.0},
        "nonce": "0123456789abcdef" * 2,
        "created_at": datetime(2026, 11, 23, 4, 0, tzinfo=UTC),
        "files": [PackageFile(path="model.safetensors", size=10, sha256="cd" * 32)],
    }
    return ExpertManifest(**(fields | overrides))


def test_round_trip_is_canonical():
    original = manifest()
    data = canonical_json(original)
    assert parse_manifest(data) == original
    assert canonical_json(parse_manifest(data)) == data
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()


def _mutated(**changes) -> bytes:
    raw = json.loads(canonical_json(manifest()))
    for key, value in changes.items():
        if value is KeyError:
            raw.pop(key)
        else:
            raw[key] = value
    return json.dumps(raw).encode()


@pytest.mark.parametrize(
    "data",
    [
        _mutated(unknown_field=1),
        _mutated(version=0),
        _mutated(version="3"),
        _mutated(org="ACME"),
        _mutated(nonce=KeyError),
        _mutated(stages=["rl", "sft"]),
        _mutated(stages=[]),
        _mutated(anchor_fingerprint="md5:00"),
        _mutated(created_at="2026-11-23T04:00:00"),  # no time zone
        _mutated(eval_scores={"math": 101}),
        _mutated(files=[{"path": "../../etc/passwd", "size": 1, "sha256": "cd" * 32}]),
        _mutated(files=[{"path": "/abs.safetensors", "size": 1, "sha256": "cd" * 32}]),
        _mutated(files=[{"path": "model.bin", "size": 1, "sha256": "cd" * 32}]),
        _mutated(files=[{"path": "model.sig", "size": 1, "sha256": "cd" * 32}]),
        _mutated(files=[{"path": "model.safetensors", "size": -1, "sha256": "cd" * 32}]),
        _mutated(files=[{"path": "a.safetensors", "size": 1, "sha256": "cd" * 32}] * 2),
        _mutated(recipe={"deep": json.loads("[" * 20 + "1" + "]" * 20)}),
        b'{"org": "a", "org": "b"}',
        b'{"version": NaN}',
        b"[1, 2, 3]",
        b"\xff\xfe not utf-8",
        b"[" * 100000,
    ],
)
def test_invalid_manifests_are_refused(data):
    with pytest.raises(BarFedError) as err:
        parse_manifest(data)
    assert err.value.code == "MANIFEST_INVALID"


def test_oversized_manifest():
    with pytest.raises(BarFedError) as err:
        parse_manifest(b" " * (1024 * 1024 + 1))
    assert err.value.code == "MANIFEST_TOO_LARGE"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_the_project_error(data):
    try:
        parse_manifest(data)
    except BarFedError as exc:
        assert exc.code in ("MANIFEST_INVALID", "MANIFEST_TOO_LARGE")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
manifest_keys = st.sampled_from([*ExpertManifest.model_fields, "extra", ""])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(manifest_keys, json_values, max_size=12))
def test_arbitrary_json_objects_raise_only_the_project_error(obj):
    try:
        parse_manifest(json.dumps(obj).encode())
    except BarFedError as exc:
        assert exc.code == "MANIFEST_INVALID"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(ExpertManifest.model_fields)), json_values)
def test_one_field_replaced_by_arbitrary_json(field, value):
    raw = json.loads(canonical_json(manifest()))
    raw[field] = value
    try:
        parse_manifest(json.dumps(raw).encode())
    except BarFedError as exc:
        assert exc.code == "MANIFEST_INVALID"
