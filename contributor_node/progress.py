"""What a node (and `barfed pull`) shows while it works: transfer bars for downloads and uploads, and a training
stage's line, ``math: SFT 640/1200 · 2:31``: live on a terminal, else plain lines printed at most every 30 s (and
one as each transfer ends), so a log file shows a run that takes hours moving without filling up."""

from __future__ import annotations

import logging
import sys
import time

from rich import filesize
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

PLAIN_EVERY_S = 30.0
WIDE = 10_000  # columns off a terminal: Rich would cut tables (full ids, paths) to 80


def make_console(*, stderr: bool = False) -> Console:
    """A console that never wraps a line (paths and ids stay whole, for scripts) and, off a terminal (a pipe, a
    log), does not cut tables to 80 columns either."""
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console.width = WIDE
    return console


class TransferProgress(Progress):
    """Rich's transfer bars on a terminal; elsewhere a plain line, ``model.safetensors: 12.6 MB/48.2 MB · 3.1 MB/s ·
    0:04``, at most every PLAIN_EVERY_S, and ``model.safetensors: 48.2 MB in 0:15`` as each transfer ends (its task
    removed, or the progress stopped)."""

    PLAIN_EVERY_S = PLAIN_EVERY_S

    def __init__(self, console: Console) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        super().__init__(
            *columns, TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal
        )
        self.printed_at: float | None = None

    def update(self, task_id: TaskID, **changes) -> None:
        super().update(task_id, **changes)
        if self.disable and (self.printed_at is None or time.monotonic() - self.printed_at >= self.PLAIN_EVERY_S):
            self._print(task_id, ended=False)

    def remove_task(self, task_id: TaskID) -> None:
        if self.disable:
            self._print(task_id, ended=True)
        super().remove_task(task_id)

    def stop(self) -> None:
        if self.disable:
            for task_id in list(self.task_ids):
                self.remove_task(task_id)
        super().stop()

    def _print(self, task_id: TaskID, ended: bool) -> None:
        task = self._tasks[task_id]
        done, elapsed = filesize.decimal(int(task.completed)), clock(task.elapsed or 0)
        if ended:
            line = f"{task.description}: {done} in {elapsed}"
        else:
            size = f"/{filesize.decimal(int(task.total))}" if task.total else ""
            speed = f" · {filesize.decimal(int(task.speed))}/s" if task.speed else ""
            line = f"{task.description}: {done}{size}{speed} · {elapsed}"
        self.console.print(line, highlight=False, markup=False)
        self.printed_at = time.monotonic()


def clock(seconds: float) -> str:
    """``2:31``, or ``1:02:31`` past an hour."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainingLine:
    """``on_step(stage, step, total)`` for `train_expert`, shown on ``console``; use it as a context manager, which
    takes the live line away at the end. While it shows, log lines print above it rather than through it."""

    PLAIN_EVERY_S = PLAIN_EVERY_S

    def __init__(self, console: Console, domain: str) -> None:
        self.console, self.domain = console, domain
        self.stage, self.step, self.total, self.stage_started = "", 0, 0, 0.0
        self.printed_at: float | None = None
        self.live: Live | None = None
        self.handlers: list[tuple[logging.StreamHandler, object]] = []

    def __call__(self, stage: str, step: int, total: int) -> None:
        now = time.monotonic()
        if stage != self.stage:
            self.stage, self.stage_started = stage, now
        self.step, self.total = step, total
        if self.console.is_terminal:
            if self.live is None:
                self._go_live()
        elif self.printed_at is None or now - self.printed_at >= self.PLAIN_EVERY_S:
            self.console.print(self.line(), highlight=False, markup=False)
            self.printed_at = now

    def line(self) -> Text:
        elapsed = clock(time.monotonic() - self.stage_started)
        return Text(f"{self.domain}: {self.stage.upper()} {self.step}/{self.total} · {elapsed}")

    def _go_live(self) -> None:
        stderr = sys.stderr
        self.live = Live(console=self.console, get_renderable=self.line, transient=True, refresh_per_second=2)
        self.live.start()
        if sys.stderr is not stderr:  # Live now prints stderr above its line: send the log handlers' lines there
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is stderr:
                    self.handlers.append((handler, handler.setStream(sys.stderr)))

    def __enter__(self) -> TrainingLine:
        return self

    def __exit__(self, *exc) -> None:
        for handler, stream in self.handlers:
            handler.setStream(stream)
        self.handlers.clear()
        if self.live is not None:
            self.live.stop()
            self.live = None
