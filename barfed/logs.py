"""Structured log lines: ``time level logger message`` as text, or one JSON object per line, for our code and for
every library under it. The process is configured once, here, with a logging dictConfig that is also exported in
$BARFED_LOG_CONFIG, so a child that applies it (the coordinator's worker) prints the same lines."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys

LOG_CONFIG_ENV = "BARFED_LOG_CONFIG"
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose INFO lines (migrations, HTTP calls, task workers, training) are chatter: only with --verbose.
LIBRARIES = (
    "alembic",
    "uvicorn",
    "celery",
    "kombu",
    "grpc",
    "transformers",
    "datasets",
    "accelerate",
    "trl",
    "httpx",
    "httpcore",
    "urllib3",
    "huggingface_hub",
    "filelock",
    "model_signing",
)
WARNINGS = "py.warnings"  # where logging.captureWarnings puts warnings.warn: a SecurityWarning, a FutureWarning


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


class RoutedLogger(logging.Logger):
    """A library's top logger that keeps no handler of its own and always propagates: transformers, datasets,
    huggingface_hub and uvicorn attach a stderr handler with their own format when they load (transformers and
    uvicorn also stop propagation), which would print their lines past ours."""

    def addHandler(self, hdlr: logging.Handler) -> None:
        pass

    @property
    def propagate(self) -> bool:  # type: ignore[override]
        return True

    @propagate.setter
    def propagate(self, value: bool) -> None:
        pass


def quiet_progress_bars() -> None:
    """Progress bars of transformers, datasets and huggingface_hub off, here and in children: read from the
    environment when those libraries load, so call this before they are imported."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def route_libraries() -> None:
    """Every library logger through the root's handler, whether the library loaded already or loads later (an
    existing logger becomes a `RoutedLogger` in place, so whoever holds it keeps it)."""
    for name in (*LIBRARIES, WARNINGS):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.__class__ = RoutedLogger


def line_handler(fmt: str = "text") -> logging.Handler:
    """The process's one handler, on stderr. Making it also routes the libraries and Python's warnings through it,
    so a process configured from the exported dictConfig alone does all of what `setup_logging` does."""
    route_libraries()
    logging.captureWarnings(True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT, "%H:%M:%S"))
    return handler


def logging_config(level: str = "INFO", fmt: str = "text", verbose: bool = False) -> dict:
    """The dictConfig: our lines at ``level``; libraries' INFO chatter and warnings only when verbose."""
    quiet = max(logging.getLevelName(level.upper()), logging.WARNING)
    libraries = logging.DEBUG if verbose else quiet
    warnings = logging.DEBUG if verbose else max(quiet, logging.ERROR)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"line": {"()": f"{__name__}.line_handler", "fmt": fmt}},
        "root": {"level": level, "handlers": ["line"]},
        "loggers": {
            **{name: {"level": libraries, "propagate": True} for name in LIBRARIES},
            WARNINGS: {"level": warnings, "propagate": True},
        },
    }


def setup_logging(level: str = "INFO", fmt: str = "text", verbose: bool = False) -> None:
    """Configure this process's logging, and export it for the processes it starts. gRPC's C core logs on its own
    (a fork's INFO line, say): quiet unless verbose, set before gRPC loads, which no command does before this."""
    config = logging_config(level, fmt, verbose)
    os.environ[LOG_CONFIG_ENV] = json.dumps(config)
    logging.config.dictConfig(config)
    if not verbose:
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
