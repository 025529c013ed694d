"""What a node shows while it works: a transfer bar for the anchor download and uploads, and a training stage's
line, ``math: SFT 640/1200 · 2:31``: live on a terminal, else printed at most every 30 s, so a log file shows a
run that takes hours moving without filling up."""

from __future__ import annotations

import logging
import sys
import time

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.text import Text


def transfer_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def clock(seconds: float) -> str:
    """``2:31``, or ``1:02:31`` past an hour."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainingLine:
    """``on_step(stage, step, total)`` for `train_expert`, shown on ``console``; use it as a context manager, which
    takes the live line away at the end. While it shows, log lines print above it rather than through it."""

    PLAIN_EVERY_S = 30.0

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
