"""Following the federation's releases on the WatchReleases stream, from the last one this node saw (watch.json),
so a watcher that stops and starts again misses none and repeats none; a coordinator that goes away is waited for
(with backoff, `retry.py`) and the stream taken up again from the last release heard."""

from __future__ import annotations

import time
from collections.abc import Iterator

from contributor_node.home import NodeHome, read_json, write_json
from contributor_node.retry import Retrying
from protocol.errors import BarFedError


def follow_releases(
    home: NodeHome, client, after: int | None, channel: str, timeout: float | None, retry: Retrying | None = None
) -> Iterator:
    """Each release newer than ``after`` (default: the last seen) or each move of ``channel``, recorded as seen
    before it is handed on; the stream ends after ``timeout`` seconds (None: never). With ``retry``, a lost
    stream is opened again while the coordinator comes back within ``retry_for_s``."""
    seen = read_json(home.record("watch"), {"last_release": 0})
    start = seen["last_release"] if after is None else after
    deadline = None if timeout is None else time.monotonic() + timeout
    patience = retry.patience() if retry else None
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        try:
            for event in client.watch_releases(start, channel, left):
                if retry:
                    patience = retry.patience()  # it answered: a later outage gets the whole retry_for_s again
                start = max(start, event.release)
                if event.release > seen["last_release"]:
                    seen["last_release"] = event.release
                    write_json(home.record("watch"), seen)
                yield event
            return
        except BarFedError as exc:
            if patience is None:
                raise
            patience.failed(exc)


def retention_dict(message) -> dict:
    """A DomainRetention message as {expert, release, retention, difference}; None where the coordinator sent none."""
    keys = ("expert", "release", "retention", "difference")
    return {k: getattr(message, k) if message.HasField(k) else None for k in keys}


def retention_text(kept: dict) -> str:
    """'14.0 of its expert's 24.0 (58%)': how much of the expert's own score a release keeps."""
    if kept["release"] is None or kept["expert"] is None:
        return "not scored"
    share = "" if kept["retention"] is None else f" ({kept['retention']:.0%})"
    return f"{kept['release']:g} of its expert's {kept['expert']:g}{share}"
