"""The anchor the demo ships is the one its record describes, built by today's recipe."""

from __future__ import annotations

import json
import shutil

import pytest

from barfed import anchors
from protocol.errors import BarFedError


def test_the_shipped_tiny_anchor_matches_its_record_and_the_current_recipe():
    from bar_model.recipe import load_base_recipe

    base, anchor = anchors.check_shipped("tiny")
    record = json.loads(anchors.record_path("tiny").read_text())
    assert anchors.describe(base.parent, "tiny") == record
    built = json.loads((anchor / "bar_build.json").read_text())
    assert built["recipe"] == load_base_recipe("tiny").model_dump(), (
        "recipes/base-tiny.toml changed: rebuild the shipped anchor with " + record["rebuild"]
    )


def test_a_damaged_shipped_anchor_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "anchors"
    shutil.copytree(anchors.SHIPPED, copy)
    monkeypatch.setattr(anchors, "SHIPPED", copy)
    weights = copy / "tiny" / "anchor" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(BarFedError) as err:
        anchors.check_shipped("tiny")
    assert err.value.code == "SHIPPED_ANCHOR_DAMAGED"
    (copy / "tiny" / "anchor" / "extra.bin").write_bytes(b"x")
    with pytest.raises(BarFedError) as err:
        anchors.check_shipped("tiny")
    assert err.value.code == "SHIPPED_ANCHOR_DAMAGED"
