"""The coordinator's tensor checks read mapped tensors and avoid tensor-sized temporaries, with the same verdicts."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from bar_model.checkpoint import SafetensorsCheckpoint
from coordinator.verification.checks import _all_finite, _relative_drift
from coordinator.verification.mapped import MappedCheckpoint


def test_mapped_tensors_equal_read_ones(tmp_path):
    tensors = {
        "a": torch.randn(33, 7),
        "b": torch.randn(5).to(torch.bfloat16),
        "c": torch.arange(11, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
    }
    save_file(tensors, tmp_path / "model.safetensors")
    mapped, read = MappedCheckpoint(tmp_path), SafetensorsCheckpoint(tmp_path)
    for name, tensor in tensors.items():
        assert mapped.tensor(name).dtype == tensor.dtype and torch.equal(mapped.tensor(name), tensor)
        assert torch.equal(mapped.tensor(name), read.tensor(name))
    view = mapped.tensor("a")
    view.zero_()  # a private map: nothing written through a view reaches the file
    assert torch.equal(SafetensorsCheckpoint(tmp_path).tensor("a"), tensors["a"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [0, 12_345, -1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_any_non_finite_value_is_found(bad, where, dtype):
    tensor = torch.randn(100_000).to(dtype)
    assert _all_finite(tensor)
    tensor[where] = bad
    assert not _all_finite(tensor)


def test_finite_values_whose_sum_overflows_are_still_finite():
    tensor = torch.full((1000,), torch.finfo(torch.float32).max)
    assert not bool(torch.isfinite(tensor.sum()))
    assert _all_finite(tensor)
    tensor[500] = float("nan")
    assert not _all_finite(tensor)


@pytest.mark.parametrize("block", [7, 1000, 1 << 20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_drift_is_the_relative_l2_distance(block, dtype):
    reference = torch.randn(300, 17).to(dtype)
    tensor = (reference.float() + 0.1 * torch.randn(300, 17)).to(dtype)
    expected = float((tensor.float() - reference.float()).norm() / reference.float().norm())
    assert _relative_drift(tensor, reference, torch.empty(block)) == pytest.approx(expected, rel=1e-5)
    assert _relative_drift(reference, reference, torch.empty(block)) == 0.0
