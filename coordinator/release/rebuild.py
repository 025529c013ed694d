"""Rebuild a published release from its release.json and compare it with what was published, file by file.

release.json (it holds wall times) and model.sig (it signs release.json) are not compared: every other file must
come out bit for bit the same on CPU with the recorded thread count.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bar_model.recipe import RouterRecipe
from coordinator.release import publish
from coordinator.release.build import Timer, build_model
from coordinator.release.signed_files import local_copy
from coordinator.runtime import Runtime
from protocol.package import SIGNATURE_FILE, file_sha256
from protocol.release import RELEASE_FILE, read_manifest


def rebuild(runtime: Runtime, number: int, scratch: Path) -> dict[str, str]:
    """Re-run r``number``'s build in ``scratch``; per file: match, differs, missing or extra."""
    published = local_copy(runtime, number)  # with an object store, its objects (each checked on the way)
    manifest = read_manifest(published)
    incremental = manifest.parent and manifest.router.incremental  # a cold build has a parent but carried no rows
    parent_dir = local_copy(runtime, manifest.parent) if incremental else None
    recipe = RouterRecipe.model_validate(manifest.router.recipe)
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    routed, _ = build_model(
        runtime, manifest.experts, parent_dir, scratch, recipe, manifest.router.threads, Timer(scratch), lambda s: None
    )
    files = scratch / "files"
    files.mkdir()
    publish.release_files(routed, files)
    skip = {RELEASE_FILE, SIGNATURE_FILE}
    ours = {p.name: file_sha256(p) for p in files.iterdir() if p.is_file()}
    theirs = {p.name: file_sha256(p) for p in published.iterdir() if p.is_file() and p.name not in skip}
    report = {}
    for name in sorted(set(ours) | set(theirs)):
        if name not in ours:
            report[name] = "missing"
        elif name not in theirs:
            report[name] = "extra"
        else:
            report[name] = "match" if ours[name] == theirs[name] else "differs"
    return report
