"""A cap on a node's transfer speed (``max_bytes_per_s``), so an upload or the anchor download shares the link."""

from __future__ import annotations

import time


class Throttle:
    def __init__(self, max_bytes_per_s: int | None) -> None:
        self.rate = max_bytes_per_s
        self.started = time.monotonic()
        self.sent = 0

    def wait(self, nbytes: int) -> None:
        """Sleep until sending ``nbytes`` more keeps the average at or below the cap (no cap: return at once)."""
        if not self.rate:
            return
        self.sent += nbytes
        ahead = self.sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)
