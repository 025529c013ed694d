"""`barfed demo --quick`: the whole federation through its real surfaces, on micro models.

Four organizations run `barfed node` processes, the operator acts through the REST API, the coordinator's worker
builds r1 and, after the code organization's v2, r2 incrementally; a user pulls `stable`. The releases must be
signed (checked with the installed `model_signing` CLI), load with stock transformers, and r2 must differ from r1
only where code v2 and the incremental router put changes. The first run has a pseudo-terminal, as in a user's
shell: while the organizations train, each one's live line must keep arriving; the rerun writes to a pipe.
"""

from __future__ import annotations

import bisect
import codecs
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ORGS = {"acme-labs": "math", "initech": "code", "globex": "tool_use", "umbrella": "safety"}
TRAINING_STEP = "organizations: train, evaluate and package their experts"


def _run_in_pty(command: list[str], timeout: float) -> tuple[int, str, list[tuple[int, float]]]:
    """Run ``command`` with a pseudo-terminal as its stdout and stderr; returns its status, what it wrote, and
    (offset in that text, arrival time) of every chunk read, so a test can tell when each part arrived."""
    master, slave = os.openpty()
    env = {**os.environ, "COLUMNS": "200", "LINES": "50"}
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    decoder, parts, arrivals = codecs.getincrementaldecoder("utf-8")(errors="replace"), [], []

    def read() -> None:
        offset = 0
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            arrivals.append((offset, time.monotonic()))
            parts.append(decoder.decode(data))
            offset += len(parts[-1])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    reader.join(timeout=30)
    os.close(master)
    return code, "".join(parts), arrivals


def _arrived(arrivals: list[tuple[int, float]], position: int) -> float:
    """When the character at ``position`` arrived."""
    return arrivals[bisect.bisect_right([offset for offset, _ in arrivals], position) - 1][1]


def _positions(text: str, needle: str, start: int = 0, end: int | None = None) -> list[int]:
    found, at = [], text.find(needle, start, end)
    while at >= 0:
        found.append(at)
        at = text.find(needle, at + 1, end)
    return found


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
    code, screen, arrivals = _run_in_pty(command, timeout=900)
    (tmp_path / "demo.tty").write_text(screen)  # what the user saw, for whoever reads a failure
    assert code == 0, screen[-6000:]

    # The training step: from its first line to its ✓, every organization's live line keeps arriving (≤ 10 s apart).
    begun, ended = _positions(screen, TRAINING_STEP)[:2]
    window = (_arrived(arrivals, begun), _arrived(arrivals, ended))
    for org, domain in ORGS.items():
        seen = [_arrived(arrivals, at) for at in _positions(screen, f"{org} {domain}:", begun, ended)]
        assert seen, f"no live line for {org} during the training step"
        times = [window[0], *seen, window[1]]
        gap = max(later - earlier for earlier, later in itertools.pairwise(times))
        assert gap <= 10.0, f"{org}'s live line went {gap:.1f} s without an update"
    work = tmp_path / "demo-quick"
    releases = work / "coordinator" / "releases"
    public_key = work / "coordinator" / "pki" / "release.pub"
    for name in ("r1", "r2"):
        assert _model_signing_verify(releases / name, public_key).returncode == 0, name
        AutoModelForCausalLM.from_pretrained(releases / name)  # stock transformers, no remote code
    pulled = work / "user" / "stable"
    assert (pulled / "model.sig").is_file() and _model_signing_verify(pulled, public_key).returncode == 0
    report = (work / "report.html").read_text()
    assert "scores near 0 are expected" in report  # --quick says why they are 0
    assert report.count("<svg") == 2 and "retention: each release" in report  # scores, then retention
    assert "retention: each release" in screen and "r1 kept (%)" in screen
    for org in ORGS:
        assert (work / "nodes" / org / "org.key").stat().st_mode & 0o077 == 0

    # r2: code v2 in code's slot, and only code's router rows trained; everything else is r1's, bit for bit.
    r2 = json.loads((releases / "r2" / "release.json").read_text())
    assert r2["parent"] == 1 and r2["router"]["incremental"] and r2["router"]["trained_rows"] == ["code"]
    assert {e["domain"]: e["version"] for e in r2["experts"]} == {"math": 1, "code": 2, "tool_use": 1, "safety": 1}
    # Every domain's expert was scored alone for retention, once per package: r2 scored only code v2.
    for domain in [*ORGS.values(), "general"]:
        assert r2["eval"][domain]["expert_score"] is not None, r2["eval"]
    with sqlite3.connect(work / "coordinator" / "registry.db") as db:
        assert db.execute("SELECT count(*) FROM expert_scores").fetchone() == (6,)  # 4 experts, code v2, anchor
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
    assert "\x1b[" not in again.stdout, "a pipe gets plain lines, no terminal control codes"
