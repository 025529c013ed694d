"""`barfed` and the coordinator's worker child end without the interpreter's last full garbage collection over what
their imports made (a second of CPU per process after the training stack): everything is frozen once the command
is done, whether it ended well, with a refusal or with a usage error."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import gc, sys
sys.argv = {argv!r}
from {entry}
try:
    main()
except SystemExit as exc:
    print("exit", exc.code)
print("frozen", gc.get_freeze_count())
"""


@pytest.mark.parametrize(
    ("entry", "argv", "status"),
    [
        ("barfed.cli import main", ["barfed", "--version"], "0"),
        ("barfed.cli import main", ["barfed", "pull", "r1", "--to", "x", "--api", "ftp://nowhere"], "2"),
        ("barfed.cli import main", ["barfed", "--no-such-option"], "64"),
        ("coordinator.tasks.worker import run_worker as main", ["-c", "--version"], "0"),
    ],
)
def test_the_process_ends_with_its_objects_frozen(entry, argv, status):
    probe = PROBE.format(argv=argv, entry=entry)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("exit", "frozen")))
    assert lines["exit"] == status, result.stdout + result.stderr
    assert int(lines["frozen"]) > 10_000
