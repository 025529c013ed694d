"""`barfed coordinator jobs …`: the job rows (verifications, release builds) as the operator sees them."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from coordinator.cli.common import ACTOR, HomeOption, console, dispatched, registry_for, runtime_for, timestamp

app = typer.Typer(help="Jobs (verify, build): list, show, retry, cancel.", no_args_is_help=True)


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
    for job in jobs.list_jobs(registry_for(home), kind=kind, state=state, limit=limit, before=before):
        table.add_row(
            str(job.id),
            job.kind,
            job.key,
            job.state,
            f"{job.attempts}/{job.max_attempts}",
            job.step,
            job.error_code,
            timestamp(job.updated_at),
        )
    console.print(table)


@app.command("show")
def show(job_id: int, home: HomeOption = None) -> None:
    """Every field of one job, its lease and its result."""
    from coordinator.state import jobs

    job = jobs.get(registry_for(home), job_id)
    table = Table("field", "value", show_header=False)
    for name, value in (
        ("id", job.id),
        ("kind", job.kind),
        ("key", job.key),
        ("state", job.state),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("step", job.step),
        ("lease holder", job.lease_owner),
        ("lease expires", timestamp(job.lease_expires_at)),
        ("heartbeat", timestamp(job.heartbeat_at)),
        ("error", f"{job.error_code}: {job.error_message}" if job.error_code else ""),
        ("params", json.dumps(job.params, sort_keys=True)),
        ("result", json.dumps(job.result, sort_keys=True)),
        ("created", timestamp(job.created_at)),
        ("updated", timestamp(job.updated_at)),
    ):
        table.add_row(name, str(value))
    console.print(table)


@app.command("retry")
def retry(job_id: int, home: HomeOption = None) -> None:
    """Queue a failed, gated or cancelled job again (attempts start over) and dispatch it."""
    from coordinator.state import jobs

    with runtime_for(home) as runtime:
        job = jobs.retry(runtime.registry, job_id, actor=ACTOR)
        console.print(f"job {job.id} queued again" + dispatched(runtime, job.id))


@app.command("cancel")
def cancel(job_id: int, home: HomeOption = None) -> None:
    """Cancel a queued or running job (a running one stops at its next heartbeat)."""
    from coordinator.state import jobs

    job = jobs.cancel(registry_for(home), job_id, actor=ACTOR)
    console.print(f"job {job.id} cancelled")
