"""`BARFED_NUM_THREADS` sets torch's thread count without importing torch up front (commands that need no model
start fast), and still applies once torch loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import sys
from barfed.cli import configure
configure(verbose=False)
assert "torch" not in sys.modules, "configure imported torch"
import torch
print(torch.get_num_threads())
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: torch's default is already one thread")
def test_the_thread_count_reaches_torch_when_it_loads():
    env = {**os.environ, "BARFED_NUM_THREADS": "1"}
    env.pop("OMP_NUM_THREADS", None)
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
