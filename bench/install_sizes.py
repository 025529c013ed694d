"""What each role's install costs (issue 27): distributions, disk and time, beside the single install of before.

For each role, a fresh venv under a temporary directory and, where the role needs torch, the Makefile's pinned torch
(`torch==2.13.0`) first, as `make` and the Dockerfile install it (on a CPU machine set up like ours that wheel is a
local CPU build; an unpinned torch would resolve PyPI's CUDA build). Then `pip install <spec>`, non-editable, from a
copy of this checkout's files (tracked and untracked, not ignored: no build output lands in the working tree).
"before" is `pip install .` of the last commit with a single install (`--before`, `git archive`), in the same run.
Recorded per role: the distributions installed and what they add to site-packages on disk (pip and setuptools,
which every venv starts with, left out), and the wall time of the pip commands (torch's, then the project's),
without pip's cache.

Run: `.venv/bin/python bench/install_sizes.py [--write]` (uses the package index; --write records it in
docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import machine_line, replace_section  # noqa: E402

TORCH = re.search(r"^TORCH \?= (\S+)", (REPO / "Makefile").read_text(), re.M).group(1)  # the pin `make` installs
TITLE = "Installs per role (issue 27)"
BEFORE = "75aeca1"  # the last commit before issue 27: one install, the same for every role
ROLES = [  # (who, pip spec, whether torch goes in first)
    ("user: `barfed pull`", ".", False),
    ("organization: `barfed node`", ".[node]", True),
    ("operator: `barfed coordinator`", ".[coordinator]", True),
    ("everything: `make test` (the `test` and `bench` extras)", ".[test,bench]", True),
]
SEEDS = {"pip", "setuptools"}  # what `python -m venv` puts in every venv


def copy_checkout(target: Path) -> Path:
    """This checkout's files as git sees them (tracked, and untracked but not ignored), without build outputs."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def export_commit(ref: str, target: Path) -> Path:
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def pip(venv: Path, *args: str) -> float:
    started = time.perf_counter()
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-cache-dir", *args]
    done = subprocess.run(command, capture_output=True, text=True)  # the local indexes' warnings are noise here
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    return time.perf_counter() - started


def disk_bytes(root: Path) -> int:
    """Bytes on disk under ``root``, as du counts them (hard links once)."""
    seen, total = set(), 0
    for directory, _, files in os.walk(root):
        for name in files:
            stat = os.lstat(os.path.join(directory, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


def size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.0f} MB"


def measure(work: Path, source: Path, spec: str, torch_first: bool) -> dict:
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    seeds = disk_bytes(site)
    torch_s = pip(venv, TORCH) if torch_first else 0.0
    project_s = pip(venv, f"{source}{spec[1:]}")
    listing = "import importlib.metadata as m, json; print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"
    names = json.loads(subprocess.check_output([str(venv / "bin" / "python"), "-c", listing]))
    result = {
        "distributions": len({n.lower() for n in names} - SEEDS),
        "bytes": disk_bytes(site) - seeds,
        "torch_s": torch_s,
        "project_s": project_s,
    }
    shutil.rmtree(venv)
    return result


def section(rows: list[str], before: str) -> str:
    """The text docs/PERFORMANCE.md records: the command, the machine, how it was measured, the table."""
    return (
        f"`.venv/bin/python bench/install_sizes.py --write` on {machine_line()}: a fresh venv per role, torch first "
        f"where the role needs it, then the project from this checkout (not editable), with pip's cache off; "
        "distributions and size leave out the venv's own pip and setuptools; the last row is `pip install .` of "
        f"{before}, the single install before the extras (see the script's docstring). Wall times are one run on a "
        "machine shared with other work.\n\n"
        + "\n".join(rows)
        + "\n\nThe training stack (torch, transformers, datasets with pyarrow) is most of every role that trains or "
        "builds a release, so a node leaves out the coordinator's distributions but little disk; the user who only "
        "pulls leaves out all of it.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="the commit whose single install is the comparison")
    parser.add_argument("--write", action="store_true", help="record the table in docs/PERFORMANCE.md")
    args = parser.parse_args()
    rows = [
        "| role | `pip install` | torch first | distributions | on disk | wall time (s): torch + project |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="barfed-install-sizes-") as temp:
        temp = Path(temp)
        now = copy_checkout(temp / "now")
        before = export_commit(args.before, temp / "before")
        runs = [(who, spec, torch, now) for who, spec, torch in ROLES]
        runs.append((f"before: the one install every role got ({args.before})", ".", True, before))
        for who, spec, torch_first, source in runs:
            figures = measure(temp, source, spec, torch_first)
            torch_cell = f"`{TORCH}`" if torch_first else "no"
            line = (
                f"| {who} | `{spec}` | {torch_cell} | {figures['distributions']} | {size(figures['bytes'])} | "
                f"{figures['torch_s']:.0f} + {figures['project_s']:.0f} |"
            )
            print(line, flush=True)
            rows.append(line)
    if args.write:
        replace_section(REPO / "docs" / "PERFORMANCE.md", "install-sizes", TITLE, section(rows, args.before))


if __name__ == "__main__":
    main()
