"""Calls to a coordinator that is away for a while (a restart, a cut link): retried after exponential backoff with
full jitter, so nodes cut off at the same moment do not all come back at the same moment, for up to
``retry_for_s``; then COORDINATOR_UNREACHABLE names the address tried and the file that configures it."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from contributor_node.settings import CONFIG_FILE, NodeSettings
from protocol.errors import BarFedError

T = TypeVar("T")


def backoff_delays(base: float = 0.2, cap: float = 10.0, rng: random.Random | None = None) -> Iterator[float]:
    """Seconds to wait before each retry: uniform in [0, min(cap, base * 2^attempt)] ("full jitter")."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        yield rng.uniform(0, min(cap, base * 2**attempt))
        attempt += 1


@dataclass(frozen=True)
class Retrying:
    """``retrying(call)`` is ``call()``, called again while the coordinator at ``address`` is unreachable;
    ``on_wait(delay)`` hears of each wait, so a person at the terminal knows why nothing moves."""

    settings: NodeSettings
    address: str
    on_wait: Callable[[float], None] | None = None

    def __call__(self, call: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.settings.retry_for_s
        delays = backoff_delays(cap=30.0)
        while True:
            try:
                return call()
            except BarFedError as exc:
                if exc.code != "COORDINATOR_UNREACHABLE":
                    raise
                delay = next(delays)
                if time.monotonic() + delay > deadline:
                    raise self._unreachable(exc) from None
                if self.on_wait is not None:
                    self.on_wait(delay)
                time.sleep(delay)

    def _unreachable(self, exc: BarFedError) -> BarFedError:
        return BarFedError(
            "COORDINATOR_UNREACHABLE",
            f"the coordinator at {self.address} did not answer ({exc.message}); check the address in "
            f"{self.settings.home / CONFIG_FILE} and that the coordinator is running, then rerun: the command "
            "resumes.",
        )
