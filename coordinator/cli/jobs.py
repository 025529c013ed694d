"""`barfed coordinator jobs …`: the job rows (verifications, release builds) as the operator sees them."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from coordinator.cli.common import (
    ACTOR,
    HomeOption,
    JsonOption,
    console,
    dispatched,
    fields,
    print_json,
    registry_for,
    runtime_for,
    table,
    timestamp,
)

app = typer.Typer(help="Jobs (verify, build): list, show, retry, cancel.", no_args_is_help=True)
JobArgument = Annotated[int, typer.Argument(help="the job's id, as `jobs list` shows it")]
JOB_FIELDS = (
    *("id", "kind", "key", "state", "attempts", "max_attempts", "step", "lease_owner", "lease_expires_at"),
    *("heartbeat_at", "error_code", "error_message", "params", "result", "created_at", "updated_at"),
)


@app.command("list")
def list_jobs(
    kind: Annotated[str | None, typer.Option(help="only this kind (verify, build)")] = None,
    state: Annotated[str | None, typer.Option(help="only this state (queued, running, done, failed, …)")] = None,
    limit: Annotated[int, typer.Option(help="at most this many", min=1)] = 200,
    before: Annotated[int | None, typer.Option(help="only jobs older than this id (the last listed)", min=1)] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """The newest jobs first; page back with --before."""
    from coordinator.state import jobs

    rows = jobs.list_jobs(registry_for(home), kind=kind, state=state, limit=limit, before=before)
    if as_json:
        print_json([fields(job, *JOB_FIELDS) for job in rows])
        return
    listing = table("id", "kind", "key", "state", "attempts", "step", "error", "updated")
    for job in rows:
        listing.add_row(
            str(job.id),
            job.kind,
            job.key,
            job.state,
            f"{job.attempts}/{job.max_attempts}",
            job.step,
            job.error_code,
            timestamp(job.updated_at),
        )
    console.print(listing)


@app.command("show")
def show(job_id: JobArgument, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Every field of one job, its lease and its result."""
    from coordinator.state import jobs

    job = jobs.get(registry_for(home), job_id)
    if as_json:
        print_json(fields(job, *JOB_FIELDS))
        return
    listing = table("field", "value", show_header=False)
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
        listing.add_row(name, str(value))
    console.print(listing)


@app.command("retry")
def retry(job_id: JobArgument, home: HomeOption = None) -> None:
    """Queue a failed, gated or cancelled job again (attempts start over) and dispatch it."""
    from coordinator.state import jobs

    with runtime_for(home) as runtime:
        job = jobs.retry(runtime.registry, job_id, actor=ACTOR)
        console.print(f"job {job.id} queued again" + dispatched(runtime, job.id))


@app.command("cancel")
def cancel(job_id: JobArgument, home: HomeOption = None) -> None:
    """Cancel a queued or running job (a running one stops at its next heartbeat)."""
    from coordinator.state import jobs

    job = jobs.cancel(registry_for(home), job_id, actor=ACTOR)
    console.print(f"job {job.id} cancelled")
