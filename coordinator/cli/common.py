"""What every `barfed coordinator` command shares: the ``--home`` option (on a command, or on `barfed coordinator`
itself) and the settings, registry or runtime it names, checked once here; the consoles; ``--json``; and the actor
the audit log records for the operator on the coordinator's own host.

Heavy modules (SQLAlchemy, Celery) are imported when a command runs, so `barfed --help` and the node's commands,
which load this package too, start at once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.table import Column, Table

from protocol.errors import BarFedError

if TYPE_CHECKING:
    from coordinator.runtime import Runtime
    from coordinator.settings import CoordinatorSettings
    from coordinator.state.db import Registry

ACTOR = "admin-cli"
GROUP = {"home": None}  # `barfed coordinator --home`, set by the group's callback on every invocation
HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="the coordinator's home (default: `barfed coordinator --home`, else settings)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON document with full ids, for scripts")]
WIDE = 100_000  # columns of a console that is not a terminal: a pipe gets whole ids, never an ellipsis


class _Console(Console):
    """Rich's console, as wide as its longest line when it writes to a pipe or a file rather than a terminal."""

    def _size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        return size if self.is_terminal else ConsoleDimensions(WIDE, size.height)

    size = property(_size, Console.size.fset)


console = _Console()
err_console = _Console(stderr=True)


def table(*headers: str, **options) -> Table:
    """A table whose cells wrap rather than end in an ellipsis, so an id is whole even on a narrow terminal."""
    return Table(*(Column(header, overflow="fold") for header in headers), **options)


def print_json(data: Any) -> None:
    """One JSON document on stdout; times in ISO 8601."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=lambda value: value.isoformat()))


def fields(row: Any, *names: str, **renamed: str) -> dict[str, Any]:
    """A registry row as a JSON object: ``names`` as they are, ``renamed`` as key=attribute."""
    return {name: getattr(row, name) for name in names} | {key: getattr(row, attr) for key, attr in renamed.items()}


def remember_home(home: HomeOption = None) -> None:
    """`barfed coordinator --home H …`: the home of every command below, unless the command names its own."""
    GROUP["home"] = home


def settings_for(home: Path | None, *, initialized: bool = True, **overrides: Any) -> CoordinatorSettings:
    """The settings a command runs with. Unless ``initialized`` is False (only `init`), a home that `init` did not
    make is refused here, before anything creates a file or opens the database."""
    from coordinator.settings import load_settings

    values = {"home": home or GROUP["home"], **overrides}
    settings = load_settings(**{key: value for key, value in values.items() if value is not None})
    if initialized:
        check_initialized(settings)
    return settings


def check_initialized(settings: CoordinatorSettings) -> None:
    """NOT_INITIALIZED unless the home holds the coordinator's keys and its registry exists with its schema."""
    from coordinator.keys import CoordinatorKeys

    advice = f"run `barfed coordinator init --home {settings.home}` first"
    if not settings.home.is_dir():
        raise BarFedError("NOT_INITIALIZED", f"there is no coordinator home at {settings.home}; {advice}.")
    if not CoordinatorKeys(settings.pki_dir).exists():
        raise BarFedError("NOT_INITIALIZED", f"{settings.home} holds no coordinator keys; {advice}.")
    _check_database(settings.db_url, advice)


def _check_database(url: str, advice: str) -> None:
    """SQLite: the file must exist (opening one would create it). A server: it must answer and hold the schema;
    the refusal names the host and database, never the password."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or not Path(parsed.database).is_file():
            raise BarFedError("NOT_INITIALIZED", f"there is no registry database {parsed.database}; {advice}.")
        return
    where = f"{parsed.host or 'localhost'}{f':{parsed.port}' if parsed.port else ''}/{parsed.database or ''}"
    options = {"connect_timeout": 5} if parsed.get_backend_name() == "postgresql" else {}
    engine = create_engine(parsed, poolclass=NullPool, connect_args=options)
    try:
        with engine.connect() as connection:
            migrated = inspect(connection).has_table("alembic_version")
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        if parsed.password:
            reason = reason.replace(parsed.password, "***")
        raise BarFedError(
            "DATABASE_UNREACHABLE",
            f"the registry database at {where} cannot be reached ({reason[:300]}); start it, or correct database_url.",
        ) from None
    finally:
        engine.dispose()
    if not migrated:
        raise BarFedError("NOT_INITIALIZED", f"the registry database at {where} has no coordinator schema; {advice}.")


def registry_for(home: Path | None, settings: CoordinatorSettings | None = None) -> Registry:
    """The registry of ``settings`` (already checked), else of the checked settings of ``home``."""
    from coordinator.state.db import Registry

    return Registry((settings or settings_for(home)).db_url)


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
