"""`barfed coordinator init`: the CA and coordinator keys, the database schema, and the published anchor.

The anchor is the 2-expert training checkpoint every expert branches from; it is copied under
``home/anchor`` and signed with the coordinator's release key, so nodes can check what they fetch.
"""

from __future__ import annotations

import fcntl
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from bar_model.checkpoint import read_config
from bar_model.durable import atomic_directory
from coordinator.keys import CoordinatorKeys
from coordinator.settings import CoordinatorSettings
from coordinator.state.db import Registry
from coordinator.storage import ANCHOR_PREFIX, ObjectStore, download_signed_tree, upload_signed_tree
from protocol.errors import BarFedError
from protocol.fingerprint import anchor_fingerprint
from protocol.package import SIGNATURE_FILE
from protocol.signing import sign_directory

if TYPE_CHECKING:
    from coordinator.runtime import Runtime

ANCHOR_FILES = (".json", ".safetensors", ".jinja")


def initialize(settings: CoordinatorSettings, anchor: Path | None = None) -> str | None:
    """Create what is missing (keys, schema, anchor); returns the anchor fingerprint when there is one. An anchor
    that cannot be published is refused first, so that nothing is created for it."""
    if anchor is not None:
        check_anchor(Path(anchor))
    settings.home.mkdir(parents=True, exist_ok=True)
    keys = CoordinatorKeys(settings.pki_dir)
    if not keys.exists():
        keys.create(settings.hostnames)
    Registry(settings.db_url).dispose()  # runs the migrations
    for directory in (settings.blob_dir, settings.staging_dir):
        directory.mkdir(parents=True, exist_ok=True)
    if anchor is not None:
        publish_anchor(settings, keys, Path(anchor))
    if (settings.anchor_dir / "config.json").is_file():
        return anchor_fingerprint(settings.anchor_dir)
    return None


def check_anchor(source: Path) -> None:
    """NOT_A_CHECKPOINT or WRONG_ARCHITECTURE unless ``source`` is a 2-expert FlexOlmo checkpoint."""
    config = read_config(source)
    if config.get("model_type") != "flex_olmo" or config.get("num_experts") != 2:
        raise BarFedError(
            "WRONG_ARCHITECTURE",
            f"{source} is not a 2-expert FlexOlmo anchor; build one with `barfed model init-anchor`.",
        )


def publish_anchor(settings: CoordinatorSettings, keys: CoordinatorKeys, source: Path) -> None:
    """Under home, signed; with an artifact store, on it too (for workers on other machines)."""
    check_anchor(source)
    if settings.anchor_dir.exists():
        if anchor_fingerprint(settings.anchor_dir) != anchor_fingerprint(source):
            raise BarFedError(
                "ANCHOR_EXISTS",
                "this coordinator already publishes a different anchor; experts of the federation depend on it.",
            )
    else:
        with atomic_directory(settings.anchor_dir) as staging:
            for path in sorted(source.iterdir()):
                if path.is_file() and path.suffix in ANCHOR_FILES and path.name != SIGNATURE_FILE:
                    shutil.copy2(path, staging / path.name)
            sign_directory(staging, keys.release_key_path)
    if settings.artifact_store:
        upload_signed_tree(ObjectStore(settings), settings.anchor_dir, ANCHOR_PREFIX)


_fetching = threading.Lock()


def fetch_anchor(runtime: Runtime) -> None:
    """A worker with a home of its own: the published anchor from the artifact store, once (it never changes),
    every file checked against the anchor's signature. None published yet: nothing to fetch (a job that needs
    one refuses with NO_ANCHOR)."""
    settings = runtime.settings
    if runtime.store is None or (settings.anchor_dir / "config.json").is_file():
        return
    settings.home.mkdir(parents=True, exist_ok=True)
    with _fetching, open(settings.home / ".anchor.lock", "a") as lock:  # threads here, processes on this home
        fcntl.flock(lock, fcntl.LOCK_EX)
        published = runtime.store.sha256(f"{ANCHOR_PREFIX}/{SIGNATURE_FILE}") is not None
        if published and not (settings.anchor_dir / "config.json").is_file():
            public_key = runtime.keys.release_public_path.read_bytes()
            download_signed_tree(runtime.store, ANCHOR_PREFIX, settings.anchor_dir, public_key)
