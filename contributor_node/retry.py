"""Calls to a coordinator that is away for a while (a restart, a cut link).

A long-running command (submit, enroll --wait, watch, the anchor download) retries after exponential backoff with
full jitter, so nodes cut off at the same moment do not all come back at the same moment, for up to
``retry_for_s``. A person waiting at a prompt (status, enroll without --wait, fetch-anchor's "is it current") gets
one short timeout and a couple of quick retries instead. Either way COORDINATOR_UNREACHABLE then names the address
tried, why it failed (connection refused, a TLS failure, a timeout) and where the address is configured. A
coordinator that answers UNAVAILABLE with a code (DATABASE_UNAVAILABLE: its database is restarting) is waited for
the same way, and named by its own code if it never recovers."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from contributor_node.settings import CONFIG_FILE, NodeSettings
from protocol.errors import BarFedError

T = TypeVar("T")
QUICK_TRIES = 3  # an interactive command's: the first call and two quick retries
ADVICE = "check that it is running and its address, then rerun: the command resumes."


class CoordinatorUnreachable(BarFedError):
    """COORDINATOR_UNREACHABLE, keeping the address and the cause apart so a retry can say them again."""

    def __init__(self, address: str, cause: str, advice: str = ADVICE) -> None:
        super().__init__("COORDINATOR_UNREACHABLE", f"the coordinator at {address} did not answer ({cause}); {advice}")
        self.address, self.cause = address, cause


class CoordinatorUnavailable(BarFedError):
    """A coded refusal with gRPC status UNAVAILABLE: the coordinator is up but cannot serve for a moment."""


def unreachable_cause(status: str, details: str, timeout: float | None) -> str:
    """Why a call got no answer, in words: connection refused, a TLS failure or a timeout; else gRPC's own."""
    details = " ".join(details.split())
    lowered = details.lower()
    if status == "DEADLINE_EXCEEDED":
        return f"timeout: no answer within {timeout:g}s" if timeout else "timeout"
    if "connection refused" in lowered:
        return "connection refused: nothing listens there"
    if any(word in lowered for word in ("ssl", "tls", "handshake", "certificate")):
        return f"TLS failure: {details[-300:]}"
    return f"{status}: {details[:300]}"


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
    ``on_wait(delay)`` hears of each wait, so a person at the terminal knows why nothing moves. ``interactive``:
    a person waits for the answer, so give up within seconds."""

    settings: NodeSettings
    address: str
    on_wait: Callable[[float], None] | None = None
    interactive: bool = False

    def __call__(self, call: Callable[[], T]) -> T:
        patience = self.patience()
        while True:
            try:
                return call()
            except BarFedError as exc:
                patience.failed(exc)

    def patience(self) -> Patience:
        """One stretch of retries; a stream that heard from the coordinator again starts a fresh one."""
        return Patience(self)

    @property
    def call_timeout_s(self) -> float:
        return self.settings.interactive_timeout_s if self.interactive else self.settings.call_timeout_s

    @property
    def patience_s(self) -> float:
        return self.settings.interactive_timeout_s if self.interactive else self.settings.retry_for_s

    def client_options(self) -> dict:
        """How a client for these calls waits: at most ``call_timeout_s`` a call, and never silently for a channel
        that is down (no ``wait_for_ready``, no gRPC retries): this class does the waiting, says so, and keeps
        the cause."""
        return {"timeout": self.call_timeout_s, "wait_for_ready": False, "retries": False}

    def gave_up(self, exc: BarFedError, tries: int, elapsed: float) -> BarFedError:
        if isinstance(exc, CoordinatorUnavailable):
            return BarFedError(
                exc.code,
                f"{exc.message.rstrip('.')} ({tries} {'try' if tries == 1 else 'tries'} in {elapsed:.1f}s at "
                f"{self.address}); rerun later: the command resumes.",
            )
        cause = getattr(exc, "cause", exc.message)
        return CoordinatorUnreachable(
            self.address,
            f"{cause}; {tries} {'try' if tries == 1 else 'tries'} in {elapsed:.1f}s",
            f"check {self._configured_in()} and that the coordinator is running, then rerun: the command resumes.",
        )

    def _configured_in(self) -> str:
        """Where this address comes from: the variable that overrides it, else node.toml."""
        fields = [f for f in ("service_address", "enroll_address") if getattr(self.settings, f) == self.address]
        variables = [f"BARFED_NODE_{field.upper()}" for field in fields if f"BARFED_NODE_{field.upper()}" in os.environ]
        if variables:
            return " or ".join(variables)
        return f"the address ({' or '.join(fields) or 'address'}) in {self.settings.home / CONFIG_FILE}"


class Patience:
    """``failed(exc)`` after each failed try: waits before the next one, or raises when there is no point."""

    def __init__(self, retrying: Retrying) -> None:
        self.retrying, self.tries = retrying, 0
        self.started = time.monotonic()
        self.deadline = self.started + retrying.patience_s
        self.delays = backoff_delays(cap=30.0)

    def failed(self, exc: BarFedError) -> None:
        if exc.code != "COORDINATOR_UNREACHABLE" and not isinstance(exc, CoordinatorUnavailable):
            raise exc
        self.tries += 1
        delay, now = next(self.delays), time.monotonic()
        if now + delay > self.deadline or (self.retrying.interactive and self.tries >= QUICK_TRIES):
            raise self.retrying.gave_up(exc, self.tries, now - self.started) from None
        if self.retrying.on_wait is not None:
            self.retrying.on_wait(delay)
        time.sleep(delay)
