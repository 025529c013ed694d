"""`barfed coordinator storage migrate --to s3://…`: move a federation's artifacts onto an object store.

The anchor and every blob (each hashed as it is copied) go first, then the releases. Every release the registry
lists is checked against its signature under home (each file to copy hashed), copied object by object (the same
create-only puts as a publish, so a run that stopped halfway resumes where it stopped and an object already there
with another sha256 is refused), then verified where it landed: the store's listing must be exactly the signed
files, and every object's recorded sha256 the signed one. Only when all of them are there does it set
``artifact_store`` in the coordinator's TOML file; restart the coordinator and workers to serve from the store. Set
``s3_endpoint_url`` and the credentials first (README, "Run at scale"): it connects with them. Stop the coordinator
first, or run it once more after the restart: a blob committed while it ran is copied by the next run, which copies
only what is missing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from coordinator.cli.common import HomeOption, console, settings_for

app = typer.Typer(help="Where the coordinator's artifacts are stored.", no_args_is_help=True)


@app.command()
def migrate(
    to: Annotated[str, typer.Option("--to", help="s3://bucket[/prefix]", show_default=False)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be copied; copy nothing")] = False,
    home: HomeOption = None,
) -> None:
    """Copy the anchor, every blob and every published release to the store, verify them there, then set
    ``artifact_store`` to it."""
    from coordinator.blobs import BlobStore
    from coordinator.release import signed_files
    from coordinator.runtime import Runtime
    from coordinator.settings import toml_file
    from coordinator.state import releases as state
    from coordinator.storage import release_prefix, upload_release
    from protocol.errors import BarFedError
    from protocol.package import file_sha256

    settings_for(home)  # NOT_INITIALIZED before anything else
    there = settings_for(home, artifact_store=to)  # BAD_SETTINGS for a URL that is not s3://bucket[/prefix]
    local = Runtime.from_settings(there.model_copy(update={"artifact_store": ""}))
    remote = Runtime(there, local.registry, BlobStore(there.blob_dir), local.keys)
    try:
        _copy_anchor(local, remote, dry_run)
        _copy_blobs(local, remote, dry_run)
        numbers = [r.number for r in state.list_releases(local.registry)]
        copied = 0
        for number in sorted(numbers):
            entries = signed_files.release_files(local, number)  # intact under home, or refused here
            prefix = release_prefix(number)
            present = remote.store.sizes(prefix)
            missing = {n: e for n, e in entries.items() if present.get(n) != e.size}
            size = sum(e.size for e in missing.values())
            console.print(f"r{number}: {len(missing)} of {len(entries)} files to copy ({size} bytes)", highlight=False)
            if dry_run or not missing:
                continue
            directory = signed_files.release_dir(local, number)
            for name, entry in missing.items():  # the signature names the files; their bytes are hashed here
                if file_sha256(directory / name) != entry.sha256:
                    raise BarFedError(
                        "RELEASE_UNVERIFIED",
                        f"r{number}/{name} under home is not what r{number} signed; restore it "
                        "(`barfed coordinator releases rebuild`) and run migrate again.",
                    )
            upload_release(remote.store, signed_files.release_dir(local, number), number)
            copied += size
        for number in sorted(numbers):
            if dry_run:
                break
            signed_files._cache.clear()
            stored = signed_files.release_files(remote, number)
            for name, entry in stored.items():
                recorded = remote.store.sha256(f"{release_prefix(number)}/{name}")
                if recorded != entry.sha256:
                    raise BarFedError(
                        "STORE_OBJECT_CORRUPT",
                        f"r{number}/{name} on {to} is not what r{number} signed; remove it and run migrate again.",
                    )
        if dry_run:
            console.print(f"dry run: nothing copied; {to} not set", highlight=False)
            return
        path = set_in_toml(toml_file(), "artifact_store", to)
        console.print(f"{len(numbers)} releases on {to} ({copied} bytes copied), each verified", highlight=False)
        console.print(
            f"artifact_store = {to!r} set in {path}; restart the coordinator and its workers", highlight=False
        )
        if os.environ.get("BARFED_COORD_ARTIFACT_STORE", to) != to:
            console.print("BARFED_COORD_ARTIFACT_STORE is set and wins over the file: change it too", highlight=False)
    finally:
        local.registry.dispose()


def _copy_anchor(local, remote, dry_run: bool) -> None:
    """The published anchor, checked against its signature here first, then its objects (create-only)."""
    from coordinator.storage import ANCHOR_PREFIX, upload_signed_tree
    from protocol.signing import verify_directory

    anchor = local.settings.anchor_dir
    if not (anchor / "config.json").is_file():
        console.print("anchor: none published", highlight=False)
        return
    present = remote.store.sizes(ANCHOR_PREFIX)
    missing = [p for p in anchor.iterdir() if p.is_file() and present.get(p.name) != p.stat().st_size]
    console.print(f"anchor: {len(missing)} files to copy", highlight=False)
    if missing and not dry_run:
        verify_directory(anchor, local.keys.release_public_path.read_bytes())
        upload_signed_tree(remote.store, anchor, ANCHOR_PREFIX)


def _copy_blobs(local, remote, dry_run: bool) -> None:
    """Every blob under home, each hashed as it is copied: a blob whose bytes are not its name is refused."""
    from coordinator.storage import blob_key
    from protocol.errors import BarFedError
    from protocol.package import file_sha256

    present = {key.replace("/", "") for key in remote.store.sizes("blobs/sha256")}
    missing = sorted(local.blobs.digests() - present)
    size = sum(local.blobs.path(d).stat().st_size for d in missing)
    console.print(f"blobs: {len(missing)} to copy ({size} bytes)", highlight=False)
    if dry_run:
        return
    for digest in missing:
        path = local.blobs.path(digest)
        if file_sha256(path) != digest:
            raise BarFedError(
                "BLOB_CORRUPT",
                f"{path} does not hash to its name; restore it from a backup (or have its organization submit the "
                "expert again) and run migrate again.",
            )
        remote.store.put_file(blob_key(digest), path, digest)


def set_in_toml(path: Path, key: str, value: str) -> Path:
    """Set a top-level string ``key`` in the TOML file (created if absent), other lines untouched."""
    line = f'{key} = "{value}"'
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"^{re.escape(key)}\s*=.*$", re.M)
    text = pattern.sub(line, text, count=1) if pattern.search(text) else f"{line}\n{text}"
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)
    return path
