"""`barfed coordinator jobs …`: the job rows (verifications, release builds) as the operator sees them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Jobs (verify, build): list, show, retry, cancel.", no_args_is_help=True)
console = Console()
HomeOption = Annotated[Path | None, typer.Option("--home", help="coordinator home (default: settings)")]


def _registry(home: Path | None):
    from coordinator.settings import load_settings
    from coordinator.state.db import Registry

    return Registry(load_settings(**({"home": home} if home else {})).db_url)


def _at(value) -> str:
    return value.isoformat(timespec="seconds") if value else ""


@app.command("list")
def list_jobs(
    kind: Annotated[str | None, typer.Option(help="only this kind (verify, build)")] = None,
    state: Annotated[str | None, typer.Option(help="only this state (queued, running, done, failed, …)")] = None,
    limit: Annotated[int, typer.Option(help="at most this many", min=1)] = 200,
    before: Annotated[int | None, typer.Option(help="only jobs older than this id (the last listed)", min=1)] = None,
    home: HomeOption = None,
) -> None:
    """The newest jobs first; page back with --before."""
    from coordinator.state import jobs

    table = Table("id", "kind", "key", "state", "attempts", "step", "error", "updated")
    for job in jobs.list_jobs(_registry(home), kind=kind, state=state, limit=limit, before=before):
        table.add_row(
            str(job.id),
            job.kind,
            job.key,
            job.state,
            f"{job.attempts}/{job.max_attempts}",
            job.step,
            job.error_code,
            _at(job.updated_at),
        )
    console.print(table)


@app.command("show")
def show(job_id: int, home: HomeOption = None) -> None:
    """Every field of one job, its lease and its result."""
    import json

    from coordinator.state import jobs

    job = jobs.get(_registry(home), job_id)
    table = Table("field", "value", show_header=False)
    for name, value in (
        ("id", job.id),
        ("kind", job.kind),
        ("key", job.key),
        ("state", job.state),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("step", job.step),
        ("lease holder", job.lease_owner),
        ("lease expires", _at(job.lease_expires_at)),
        ("heartbeat", _at(job.heartbeat_at)),
        ("error", f"{job.error_code}: {job.error_message}" if job.error_code else ""),
        ("params", json.dumps(job.params, sort_keys=True)),
        ("result", json.dumps(job.result, sort_keys=True)),
        ("created", _at(job.created_at)),
        ("updated", _at(job.updated_at)),
    ):
        table.add_row(name, str(value))
    console.print(table)


def _dispatch(home: Path | None, job_id: int) -> bool:
    from coordinator.settings import load_settings
    from coordinator.tasks.app import make_app
    from coordinator.tasks.dispatch import Dispatcher

    dispatcher = Dispatcher(make_app(load_settings(**({"home": home} if home else {}))))
    try:
        return dispatcher.dispatch(job_id)
    finally:
        dispatcher.close()


@app.command("retry")
def retry(job_id: int, home: HomeOption = None) -> None:
    """Queue a failed, gated or cancelled job again (attempts start over) and dispatch it."""
    from coordinator.state import jobs

    job = jobs.retry(_registry(home), job_id, actor="admin-cli")
    sent = _dispatch(home, job.id)
    console.print(f"job {job.id} queued again" + ("" if sent else "; the coordinator's sweeper will dispatch it"))


@app.command("cancel")
def cancel(job_id: int, home: HomeOption = None) -> None:
    """Cancel a queued or running job (a running one stops at its next heartbeat)."""
    from coordinator.state import jobs

    job = jobs.cancel(_registry(home), job_id, actor="admin-cli")
    console.print(f"job {job.id} cancelled")
