"""Following the federation's releases on the WatchReleases stream, from the last one this node saw (watch.json),
so a watcher that stops and starts again misses none and repeats none."""

from __future__ import annotations

from collections.abc import Iterator

from contributor_node.home import NodeHome, read_json, write_json


def follow_releases(home: NodeHome, client, after: int | None, channel: str, timeout: float | None) -> Iterator:
    """Each release newer than ``after`` (default: the last seen) or each move of ``channel``, recorded as seen
    before it is handed on; the stream ends after ``timeout`` seconds (None: never)."""
    seen = read_json(home.record("watch"), {"last_release": 0})
    for event in client.watch_releases(seen["last_release"] if after is None else after, channel, timeout):
        if event.release > seen["last_release"]:
            seen["last_release"] = event.release
            write_json(home.record("watch"), seen)
        yield event
