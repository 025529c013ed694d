"""The `barfed` commands the demo's actors run, as separate processes, and how a failed one is reported."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from protocol.errors import BarFedError

ERROR_LINE = re.compile(r"error \[([A-Z0-9_]+)\] (.*)")


def barfed(*args: str) -> list[str]:
    """``barfed ARGS`` run by this very Python, so the demo needs no ``barfed`` on PATH."""
    return [sys.executable, "-m", "barfed.cli", *args]


def failure(who: str, output: str, status: int, fallback: str, log: Path | None = None) -> BarFedError:
    """The error a failed command printed last (the CLI's one-line ``error [CODE] message``), else its status."""
    found = ERROR_LINE.findall(output)
    code, message = found[-1] if found else (fallback, f"it exited with status {status}.")
    return BarFedError(code, f"{who}: {message}" + (f" (log: {log})" if log else ""))
