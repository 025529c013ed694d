"""The tiny anchor the project ships, as real federations start from a published anchor rather than pretraining.

``barfed/anchors/<recipe>/`` holds ``base/`` and ``anchor/`` exactly as
``BARFED_NUM_THREADS=1 barfed model build-base --recipe <recipe> --out DIR`` writes them, and
``barfed/anchors/<recipe>.json`` their sha256 digests and fingerprint, so anyone can rebuild and compare (the
weights and tokenizer files; ``bar_build.json`` also records each stage's wall time).
The demo checks every digest before it uses a byte; other recipes are built here, once.
"""

from __future__ import annotations

import json
from pathlib import Path

from protocol.errors import BarFedError
from protocol.package import file_sha256

SHIPPED = Path(__file__).parent / "anchors"
REBUILD = "BARFED_NUM_THREADS=1 barfed model build-base --recipe {recipe} --out DIR"


def record_path(recipe: str) -> Path:
    return SHIPPED / f"{recipe}.json"


def describe(directory: Path, recipe: str) -> dict:
    """What ``<recipe>.json`` records about a build in ``directory`` (holding base/ and anchor/)."""
    from protocol.fingerprint import anchor_fingerprint

    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.parent.name in ("base", "anchor"))
    return {
        "recipe": recipe,
        "rebuild": REBUILD.format(recipe=recipe),
        "fingerprint": anchor_fingerprint(directory / "anchor"),
        "files": {p.relative_to(directory).as_posix(): file_sha256(p) for p in files},
    }


def check_shipped(recipe: str) -> tuple[Path, Path]:
    """The shipped base and anchor, after checking every file against the recorded digests."""
    record_file = record_path(recipe)
    if not record_file.is_file():
        raise BarFedError("NO_SHIPPED_ANCHOR", f"no anchor is shipped for recipe {recipe!r}; build it instead.")
    record = json.loads(record_file.read_text())
    directory = SHIPPED / recipe
    present = {
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    if present != set(record["files"]):
        raise BarFedError(
            "SHIPPED_ANCHOR_DAMAGED",
            f"{directory} does not hold exactly the files {record_file.name} lists; reinstall the package.",
        )
    for name, digest in record["files"].items():
        if file_sha256(directory / name) != digest:
            raise BarFedError(
                "SHIPPED_ANCHOR_DAMAGED", f"{directory / name} differs from its recorded digest; reinstall."
            )
    return directory / "base", directory / "anchor"


def prepare(out_dir: Path, recipe: str, *, shipped: bool) -> tuple[Path, Path]:
    """Base and anchor for ``recipe``: the shipped ones when asked for, else built under ``out_dir`` (resumable)."""
    if shipped:
        return check_shipped(recipe)
    from bar_model.base import build_base
    from bar_model.recipe import load_base_recipe

    return build_base(load_base_recipe(recipe), out_dir, progress=False)
