"""init-anchor: the 2-expert FlexOlmo training checkpoint, exactly as DESIGN §2 describes it."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from bar_model.branch import init_anchor
from bar_model.checkpoint import SafetensorsCheckpoint
from protocol.errors import BarFedError
from protocol.layout import expert_key, router_key

pytestmark = pytest.mark.slow


def test_slots_router_and_shared_weights(micro):
    base, anchor, branch = (SafetensorsCheckpoint(micro[k]) for k in ("base", "anchor", "branch"))
    config = json.loads((micro["branch"] / "config.json").read_text())
    assert config["model_type"] == "flex_olmo" and config["num_experts"] == 2
    assert config["num_experts_per_tok"] == 2 and config["router_aux_loss_coef"] == 0.0
    for layer in range(config["num_hidden_layers"]):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            dense = f"model.layers.{layer}.mlp.{proj}.weight"
            assert torch.equal(branch.tensor(expert_key(layer, 0, proj)), anchor.tensor(dense))
            assert torch.equal(branch.tensor(expert_key(layer, 1, proj)), base.tensor(dense))
        assert torch.equal(branch.tensor(router_key(layer)), torch.zeros(2, config["hidden_size"]))
    for key in anchor:
        if ".mlp." not in key:
            assert torch.equal(branch.tensor(key), anchor.tensor(key)), key
    assert (micro["branch"] / "tokenizer.json").read_bytes() == (micro["anchor"] / "tokenizer.json").read_bytes()


def test_branch_without_base_computes_exactly_the_anchor(micro, tmp_path):
    """With slot 1 = anchor FFN and equal router rows, the 2-expert model is the anchor."""
    branch = init_anchor(micro["anchor"], tmp_path / "branch")
    dense = AutoModelForCausalLM.from_pretrained(micro["anchor"], dtype=torch.float32)
    moe = AutoModelForCausalLM.from_pretrained(branch, dtype=torch.float32)
    ids = torch.randint(0, dense.config.vocab_size, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(moe(ids).logits, dense(ids).logits, rtol=1e-5, atol=1e-5)


def test_refuses_non_olmo2(micro, tmp_path):
    with pytest.raises(BarFedError) as err:
        init_anchor(micro["branch"], tmp_path / "out")  # a FlexOlmo model is not a dense OLMo-2
    assert err.value.code == "WRONG_ARCHITECTURE" and "flex_olmo" in err.value.message
    assert not (tmp_path / "out").exists()


def test_refuses_config_mismatch(micro, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(micro["base"], other)
    config = json.loads((other / "config.json").read_text())
    config["intermediate_size"] *= 2
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(BarFedError) as err:
        init_anchor(micro["anchor"], tmp_path / "out", other)
    assert err.value.code == "SHAPE_MISMATCH" and "intermediate_size" in err.value.message
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_refuses_tensor_shape_mismatch(micro, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(micro["base"], other)
    tensors = load_file(other / "model.safetensors")
    tensors["model.norm.weight"] = torch.ones(3)
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BarFedError) as err:
        init_anchor(micro["anchor"], tmp_path / "out", other)
    assert err.value.code == "SHAPE_MISMATCH" and "model.norm.weight" in err.value.message


def test_refuses_missing_or_pickled_checkpoint(micro, tmp_path):
    with pytest.raises(BarFedError) as err:
        init_anchor(tmp_path / "nowhere", tmp_path / "out")
    assert err.value.code == "NOT_A_CHECKPOINT"
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(micro["anchor"] / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(BarFedError) as err:
        init_anchor(pickled, tmp_path / "out")
    assert err.value.code == "NO_SAFETENSORS" and "pickle" in err.value.message


def test_output_is_never_overwritten(micro, tmp_path):
    out = init_anchor(micro["anchor"], tmp_path / "out")
    with pytest.raises(BarFedError) as err:
        init_anchor(micro["anchor"], out)
    assert err.value.code == "OUTPUT_EXISTS"
