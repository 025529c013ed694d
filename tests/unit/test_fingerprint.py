"""The anchor fingerprint changes with architecture, tensor layout or tokenizer, and with nothing else."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from protocol.errors import BarFedError
from protocol.fingerprint import anchor_fingerprint, safetensors_header

pytestmark = pytest.mark.slow


@pytest.fixture
def anchor(micro, tmp_path):
    target = tmp_path / "anchor"
    shutil.copytree(micro["branch"], target)
    return target


def _rewrite_tensors(directory, change):
    tensors = load_file(directory / "model.safetensors")
    change(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def test_stable_across_copies_and_weight_values(micro, anchor):
    reference = anchor_fingerprint(micro["branch"])
    assert reference.startswith("sha256:") and anchor_fingerprint(anchor) == reference
    _rewrite_tensors(anchor, lambda t: t["model.norm.weight"].mul_(2))
    assert anchor_fingerprint(anchor) == reference, "values are checked elsewhere (slot 0 bit for bit)"


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.__setitem__("model.norm.weight", t["model.norm.weight"].to(torch.bfloat16)),
        lambda t: t.__setitem__("model.norm.weight", torch.ones(7)),
        lambda t: t.__setitem__("extra.weight", torch.ones(1)),
        lambda t: t.pop("lm_head.weight"),
    ],
    ids=["dtype", "shape", "extra tensor", "missing tensor"],
)
def test_changes_with_tensor_layout(micro, anchor, change):
    _rewrite_tensors(anchor, change)
    assert anchor_fingerprint(anchor) != anchor_fingerprint(micro["branch"])


def test_changes_with_tokenizer_and_architecture(micro, anchor):
    reference = anchor_fingerprint(micro["branch"])
    tokenizer = json.loads((anchor / "tokenizer.json").read_text())
    tokenizer["added_tokens"][0]["content"] = "<|other|>"
    (anchor / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert anchor_fingerprint(anchor) != reference
    shutil.copy(micro["branch"] / "tokenizer.json", anchor / "tokenizer.json")
    config = json.loads((anchor / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (anchor / "config.json").write_text(json.dumps(config))
    assert anchor_fingerprint(anchor) != reference
    config["rms_norm_eps"] = json.loads((micro["branch"] / "config.json").read_text())["rms_norm_eps"]
    config["transformers_version"] = "0.0.1"  # not architecture-relevant
    (anchor / "config.json").write_text(json.dumps(config))
    assert anchor_fingerprint(anchor) == reference


@pytest.mark.parametrize(
    "content,code",
    [
        (b"\x01", "BAD_SAFETENSORS"),
        ((2**40).to_bytes(8, "little"), "BAD_SAFETENSORS"),
        ((10).to_bytes(8, "little") + b"{", "BAD_SAFETENSORS"),
        ((2).to_bytes(8, "little") + b"[]", "BAD_SAFETENSORS"),
    ],
    ids=["short", "huge header", "truncated", "not an object"],
)
def test_hostile_safetensors_headers(tmp_path, content, code):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(BarFedError) as err:
        safetensors_header(path)
    assert err.value.code == code
