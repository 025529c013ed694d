"""Shared by the benchmarks: describe the machine, and rewrite one section of docs/PERFORMANCE.md."""

from __future__ import annotations

import os
import platform
import re
from datetime import date
from pathlib import Path

import torch


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {device}, torch {torch.__version__}, {date.today().isoformat()}"


def replace_section(path: Path, key: str, title: str, body: str) -> None:
    """Put ``body`` between this benchmark's markers, appending the section the first time."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n## {title}\n\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Performance\n\nWhat the benchmarks in `bench/` measured.\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
