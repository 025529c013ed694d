"""What every `barfed coordinator` command shares: the ``--home`` option and the settings, registry or runtime it
names, the consoles, and the actor the audit log records for the operator on the coordinator's own host.

Heavy modules (SQLAlchemy, Celery) are imported when a command runs, so `barfed --help` and the node's commands,
which load this package too, start at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from coordinator.runtime import Runtime
    from coordinator.settings import CoordinatorSettings
    from coordinator.state.db import Registry

ACTOR = "admin-cli"
HomeOption = Annotated[Path | None, typer.Option("--home", help="coordinator home (default: settings)")]
console = Console()
err_console = Console(stderr=True)


def settings_for(home: Path | None) -> CoordinatorSettings:
    from coordinator.settings import load_settings

    return load_settings(**({"home": home} if home else {}))


def registry_for(home: Path | None) -> Registry:
    from coordinator.state.db import Registry

    return Registry(settings_for(home).db_url)


@contextlib.contextmanager
def runtime_for(home: Path | None) -> Iterator[Runtime]:
    """The coordinator's runtime, with a dispatcher that sends what a command queues to the workers at once."""
    from coordinator.runtime import Runtime
    from coordinator.tasks.celery_app import make_app
    from coordinator.tasks.dispatch import Dispatcher

    settings = settings_for(home)
    runtime = Runtime.from_settings(settings, dispatcher=Dispatcher(make_app(settings), settings))
    try:
        yield runtime
    finally:
        runtime.close()


def dispatched(runtime: Runtime, job_id: int) -> str:
    """Send a job the command queued; says who sends it when the broker could not be reached now."""
    return "" if runtime.dispatch(job_id) else "; the coordinator's sweeper will dispatch it"


def timestamp(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""
