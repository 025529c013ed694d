"""Each organization's live state while a demo step runs its nodes: the command it is running and, while it trains,
the stage and step from the record `barfed node train` keeps in the node's home (``training.json``), in the words
of the node's own training line.

On a terminal, one line per organization that Rich redraws in place; elsewhere (a log, a pipe) a plain line per
organization at most every 30 s and only when it changed, so a short step prints nothing and a log stays readable.
Polled about once a second from a thread of its own: the steps never wait for it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text

from barfed.demo.profiles import ORGS
from contributor_node.home import NodeHome, read_json
from contributor_node.progress import clock

POLL_S = 1.0
PLAIN_EVERY_S = 30.0


@dataclass
class Activity:
    """What one organization is doing in the step being watched."""

    command: str | None = None
    started: float = field(default_factory=time.time)  # wall clock, as the training record's times are
    finished: bool = False
    printed: str | None = None  # the plain line printed last, and when
    printed_at: float = field(default_factory=time.monotonic)


class Board:
    """The organizations' lines, fed by the node runner (`began`, `finished`) and the nodes' training records."""

    def __init__(self, console: Console, homes: dict[str, Path]) -> None:
        self.console = console
        self.homes = homes  # org -> its node home
        self.activity: dict[str, Activity] = {}
        self.live = console.is_terminal and not console.is_dumb_terminal

    def began(self, org: str, command: str) -> None:
        activity = self.activity.setdefault(org, Activity())
        activity.command, activity.started = command, time.time()

    def finished(self, org: str) -> None:
        if org in self.activity:
            self.activity[org].finished = True

    def line(self, org: str) -> str:
        """``acme-labs math: SFT 640/1200 · 2:31``, ``initech code: eval · 0:12``, ``globex tool_use: done ✓``."""
        activity = self.activity.get(org) or Activity()
        head = f"{org} {ORGS[org]}:"
        if activity.finished:
            return f"{head} done ✓"
        if activity.command is None:
            return f"{head} waiting"
        now = time.time()
        record = self._training(org, activity) if activity.command == "train" else None
        if record:
            stage, elapsed = str(record["stage"]).upper(), clock(max(0.0, now - record["stage_started_at"]))
            return f"{head} {stage} {record['step']}/{record['total']} · {elapsed}"
        return f"{head} {activity.command} · {clock(max(0.0, now - activity.started))}"

    def _training(self, org: str, activity: Activity) -> dict | None:
        """This command's training record while it trains; none before its first write (an earlier training's
        record may still be there), once it is done, or while it reads as anything but the record."""
        try:
            record = read_json(NodeHome(self.homes[org]).training)
            fresh = record["updated_at"] >= activity.started and not record["done"]
            if fresh and all(key in record for key in ("stage", "step", "total", "stage_started_at")):
                return record
        except (OSError, ValueError, TypeError, KeyError):
            pass
        return None

    def render(self) -> Text:
        return Text("\n".join(f"    {self.line(org)}" for org in self.activity))

    @contextlib.contextmanager
    def watching(self, orgs: list[str]) -> Iterator[None]:
        """Show ``orgs``' lines until the block ends; on a terminal they vanish then, leaving the step's own line."""
        if not orgs:
            yield
            return
        self.activity = {org: Activity() for org in orgs}
        live = Live(self.render(), console=self.console, auto_refresh=False, transient=True) if self.live else None
        stop = threading.Event()
        with live or contextlib.nullcontext():
            ticker = threading.Thread(target=self._tick, args=(stop, live), name="demo-progress", daemon=True)
            ticker.start()
            try:
                yield
            finally:
                stop.set()
                ticker.join()

    def _tick(self, stop: threading.Event, live: Live | None) -> None:
        while not stop.wait(POLL_S):
            if live is not None:
                live.update(self.render(), refresh=True)
            else:
                self._print_due()

    def _print_due(self) -> None:
        now = time.monotonic()
        for org, activity in list(self.activity.items()):
            line = self.line(org)
            if now - activity.printed_at >= PLAIN_EVERY_S and line != activity.printed:
                self.console.print(f"    {line}", highlight=False, markup=False)
                activity.printed, activity.printed_at = line, now
