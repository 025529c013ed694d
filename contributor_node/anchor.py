"""The anchor this node trains on: its fingerprint as recorded when it was fetched (anchor.json), whether the
coordinator still publishes it, and fetching it (resumable; the release signature is checked before anything
uses it). Packages are built and submitted only against the anchor the coordinator publishes now."""

from __future__ import annotations

import time
from collections.abc import Callable

from contributor_node.home import NodeHome, read_json, write_json
from contributor_node.retry import Retrying
from contributor_node.settings import NodeSettings
from contributor_node.throttle import Throttle
from protocol.errors import BarFedError


def fetched(home: NodeHome) -> bool:
    return home.anchor.is_dir() and bool(read_json(home.record("anchor")))


def our_anchor(home: NodeHome) -> str:
    """The fingerprint of the verified anchor this node holds (NO_ANCHOR before `fetch-anchor`)."""
    record = read_json(home.record("anchor"))
    if record is None or not home.anchor.is_dir():
        raise BarFedError("NO_ANCHOR", "this node has no verified anchor yet; run `barfed node fetch-anchor`.")
    return record["fingerprint"]


def anchor_changed(ours: str, theirs: str) -> BarFedError:
    return BarFedError(
        "ANCHOR_CHANGED",
        f"the coordinator now publishes anchor {theirs}, but this node has {ours}; move the node's anchor/ "
        "aside, run `barfed node fetch-anchor`, then train, package and submit against the new anchor.",
    )


def check_current(ours: str, client, retry: Retrying) -> None:
    """ANCHOR_CHANGED unless the coordinator still publishes anchor ``ours``."""
    theirs = retry(client.anchor_manifest).fingerprint
    if theirs != ours:
        raise anchor_changed(ours, theirs)


def fetch(
    settings: NodeSettings,
    client,
    retry: Retrying,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> tuple[str, int]:
    """Download the anchor (continuing a partial download), verify it with the pinned release key and record it:
    its fingerprint and the bytes this run received. ``on_progress(path, done, size)`` follows each file."""
    home = NodeHome(settings.home)
    release_pub = settings.release_key_path.read_bytes()
    throttle = Throttle(settings.max_bytes_per_s)
    received = 0

    def on_bytes(path: str, nbytes: int, done: int, size: int) -> None:
        nonlocal received
        received += nbytes
        if on_progress is not None:
            on_progress(path, done, size)
        throttle.wait(nbytes)

    fingerprint = retry(lambda: client.fetch_anchor(home.anchor, release_pub, on_bytes=on_bytes))
    write_json(home.record("anchor"), {"fingerprint": fingerprint, "fetched_at": int(time.time())})
    return fingerprint, received
