"""One logging configuration for every line a process prints: libraries that bring a handler of their own
(huggingface_hub, uvicorn) print once, in our format; their INFO lines and Python's warnings only when verbose; and a
child process that applies the exported configuration (as the coordinator's worker does) prints the same lines.
Each case runs in a fresh interpreter, since configuring logging is a process's business."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import logging, subprocess, sys, warnings
from barfed.logs import setup_logging

setup_logging("INFO", sys.argv[1], verbose=sys.argv[2] == "verbose")
import huggingface_hub, uvicorn  # each attaches a stderr handler of its own as it loads

uvicorn.Config(app=None)  # uvicorn's own dictConfig: its handlers, propagation off
logging.getLogger("huggingface_hub.file_download").warning("hub warning")
logging.getLogger("uvicorn.error").warning("uvicorn warning")
logging.getLogger("alembic.runtime.migration").info("library info")
warnings.warn("a library's deprecation", FutureWarning)
logging.getLogger("barfed.probe").info("ours")
child = "import json, logging.config, os; logging.config.dictConfig(json.loads(os.environ['BARFED_LOG_CONFIG'])); "
subprocess.run([sys.executable, "-c", child + "logging.getLogger('barfed.child').info('child')"], check=True)
"""


def _lines(fmt: str, verbose: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROBE, fmt, verbose], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    return result.stderr.splitlines()


def test_json_lines_for_every_library_and_quiet_by_default():
    records = [json.loads(line) for line in _lines("json", "quiet")]
    assert [(r["logger"], r["message"]) for r in records] == [
        ("huggingface_hub.file_download", "hub warning"),
        ("uvicorn.error", "uvicorn warning"),
        ("barfed.probe", "ours"),
        ("barfed.child", "child"),
    ]


def test_verbose_text_shows_library_info_and_warnings_as_our_lines():
    text = "\n".join(_lines("text", "verbose"))
    assert text.count("hub warning") == 1 and text.count("uvicorn warning") == 1
    assert " INFO alembic.runtime.migration: library info" in text
    assert " WARNING py.warnings: " in text and "FutureWarning: a library's deprecation" in text
    assert " INFO barfed.child: child" in text
