"""`BARFED_NUM_THREADS` sets torch's thread count without importing torch up front (commands that need no model
start fast), and still applies once torch loads."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import sys
from barfed.cli import configure
configure(verbose=False)
assert "torch" not in sys.modules, "configure imported torch"
import os
import torch
print(os.environ["OMP_NUM_THREADS"], torch.get_num_threads())
"""


def test_the_thread_count_reaches_torch_when_it_loads():
    """On one core torch's default is already one thread, so there the count says nothing; the variable still does."""
    env = {**os.environ, "BARFED_NUM_THREADS": "1"}
    env.pop("OMP_NUM_THREADS", None)
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]
