"""Waits between retries: exponential backoff with full jitter, so nodes a coordinator restart cut off at the
same moment do not all come back at the same moment."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(base: float = 0.2, cap: float = 10.0, rng: random.Random | None = None) -> Iterator[float]:
    """Seconds to wait before each retry: uniform in [0, min(cap, base * 2^attempt)] ("full jitter")."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        yield rng.uniform(0, min(cap, base * 2**attempt))
        attempt += 1
