"""A refusal prints as one `error [CODE] message` line however long, so logs (and the demo, which reads a node's
log to name the failure) get the whole sentence."""

from __future__ import annotations

import re
import subprocess
import sys


def test_a_long_refusal_is_one_line_when_not_a_terminal(tmp_path):
    home = tmp_path / ("a-node-home-with-a-long-name-" * 4)
    result = subprocess.run(
        [sys.executable, "-m", "barfed.cli", "node", "--home", str(home), "train"], capture_output=True, text=True
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) > 120, result.stderr
    code, message = re.fullmatch(r"error \[([A-Z_]+)\] (.*)", lines[0]).groups()
    assert code == "NOT_INITIALIZED" and str(home) in message and message.endswith("first.")
