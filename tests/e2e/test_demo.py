"""`barfed demo --quick`: the whole federation through its real surfaces, on micro models.

Four organizations run `barfed node` processes, the operator acts through the REST API, the coordinator's worker
builds r1 and, after the code organization's v2, r2 incrementally; a user pulls `stable`. The releases must be
signed (checked with the installed `model_signing` CLI), load with stock transformers, and r2 must differ from r1
only where code v2 and the incremental router put changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _model_signing_verify(release: Path, public_key: Path) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).parent / "model_signing"
    command = [str(tool), "verify", "key", str(release), "--signature", str(release / "model.sig")]
    return subprocess.run(
        [*command, "--public_key", str(public_key), "--no-ignore-git-paths"], capture_output=True, text=True
    )


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def test_quick_demo_runs_the_federation_and_resumes(tmp_path):
    from transformers import AutoModelForCausalLM

    command = [sys.executable, "-m", "barfed.cli", "demo", "--quick", "--home", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    work = tmp_path / "demo-quick"
    releases = work / "coordinator" / "releases"
    public_key = work / "coordinator" / "pki" / "release.pub"
    for name in ("r1", "r2"):
        assert _model_signing_verify(releases / name, public_key).returncode == 0, name
        AutoModelForCausalLM.from_pretrained(releases / name)  # stock transformers, no remote code
    pulled = work / "user" / "stable"
    assert (pulled / "model.sig").is_file() and _model_signing_verify(pulled, public_key).returncode == 0
    assert (work / "report.html").read_text().count("<svg") == 1
    for org in ("acme-labs", "initech", "globex", "umbrella"):
        assert (work / "nodes" / org / "org.key").stat().st_mode & 0o077 == 0

    # r2: code v2 in code's slot, and only code's router rows trained; everything else is r1's, bit for bit.
    r2 = json.loads((releases / "r2" / "release.json").read_text())
    assert r2["parent"] == 1 and r2["router"]["incremental"] and r2["router"]["trained_rows"] == ["code"]
    assert {e["domain"]: e["version"] for e in r2["experts"]} == {"math": 1, "code": 2, "tool_use": 1, "safety": 1}
    slot = json.loads((releases / "r2" / "bar_merge.json").read_text())["slots"].index("code")
    before, after = _tensors(releases / "r1"), _tensors(releases / "r2")
    packages = work / "nodes" / "initech" / "packages"
    v1, v2 = _tensors(packages / "code-v1"), _tensors(packages / "code-v2")
    moved_by_v2 = {name for name, tensor in v2.items() if name not in v1 or not torch.equal(tensor, v1[name])}
    assert before.keys() == after.keys()
    for name, tensor in after.items():
        if f".mlp.experts.{slot}." in name:
            continue
        if name.endswith("mlp.gate.weight"):
            rows = [i for i in range(tensor.shape[0]) if i != slot]
            assert torch.equal(tensor[rows], before[name][rows]), name
        elif name not in moved_by_v2:  # a shared tensor changes only where v2 itself moved it
            assert torch.equal(tensor, before[name]), name
    assert any(not torch.equal(after[n], before[n]) for n in after if f".mlp.experts.{slot}." in n)

    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert not (releases / "r3").exists(), "a resumed demo must not submit or build again"
    assert "demo finished" in again.stdout
