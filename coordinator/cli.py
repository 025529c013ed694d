"""`barfed coordinator …`: set up and run the coordinator, and the operator's actions on its own host."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from coordinator.jobs_cli import app as jobs_app
from coordinator.releases_cli import app as releases_app
from coordinator.tokens_cli import app as tokens_app

app = typer.Typer(help="Run the federation's coordinator and act on it as its operator.", no_args_is_help=True)
orgs = typer.Typer(help="Organizations: invite, revoke.", no_args_is_help=True)
enrollments = typer.Typer(help="Enrollment requests: list, approve, reject.", no_args_is_help=True)
experts = typer.Typer(help="Accepted experts and submissions.", no_args_is_help=True)
app.add_typer(orgs, name="orgs")
app.add_typer(enrollments, name="enrollments")
app.add_typer(experts, name="experts")
app.add_typer(releases_app, name="releases")
app.add_typer(jobs_app, name="jobs")
app.add_typer(tokens_app, name="tokens")
console = Console()

HomeOption = Annotated[Path | None, typer.Option("--home", help="coordinator home (default: settings)")]


def _settings(home: Path | None):
    from coordinator.settings import load_settings

    return load_settings(**({"home": home} if home else {}))


def _registry(home: Path | None):
    from coordinator.state.db import Registry

    return Registry(_settings(home).db_url)


@app.command()
def init(
    home: HomeOption = None,
    anchor: Annotated[Path | None, typer.Option(help="2-expert anchor to publish (from init-anchor)")] = None,
) -> None:
    """Create the CA, the coordinator's keys and database, and publish the anchor."""
    from coordinator.setup import initialize

    settings = _settings(home)
    fingerprint = initialize(settings, anchor)
    console.print(f"coordinator ready in {settings.home}")
    console.print(f"CA certificate (give it to organizations): {settings.pki_dir / 'ca.pem'}")
    console.print(f"release public key (publish it): {settings.pki_dir / 'release.pub'}")
    if fingerprint:
        console.print(f"anchor {fingerprint}")


@app.command()
def serve(
    home: HomeOption = None,
    no_worker: Annotated[
        bool,
        typer.Option("--no-worker", help="run no task worker: `celery -A coordinator.tasks worker` runs elsewhere"),
    ] = False,
    api_listen: Annotated[
        str | None, typer.Option("--api-listen", help="host:port of the REST API (default: settings, 127.0.0.1:8443)")
    ] = None,
) -> None:
    """Serve gRPC and the REST API, sweep jobs and supervise a `celery worker` subprocess, until interrupted."""
    from coordinator.grpc.server import run
    from coordinator.settings import load_settings

    overrides = {"home": home, "api_listen": api_listen}
    settings = load_settings(**{key: value for key, value in overrides.items() if value is not None})
    run(settings, worker="none" if no_worker else "process")


@orgs.command("invite")
def invite(
    org_id: str,
    domains: Annotated[str, typer.Option(help="comma-separated domains the org may publish")],
    home: HomeOption = None,
) -> None:
    """Invite an organization; prints the one-time enrollment token to hand it out of band."""
    from coordinator.enrollment import invite as do_invite

    token = do_invite(_registry(home), org_id, [d.strip() for d in domains.split(",") if d.strip()])
    typer.echo(token)


@orgs.command("revoke")
def revoke(org_id: str, reason: Annotated[str, typer.Option()], home: HomeOption = None) -> None:
    """Revoke an organization: its certificate and signing key stop working at once."""
    from coordinator.enrollment import revoke as do_revoke

    do_revoke(_registry(home), org_id, reason)
    console.print(f"{org_id} revoked")


@enrollments.command("list")
def list_enrollments(home: HomeOption = None) -> None:
    from coordinator.state.orgs import list_enrollments as enrollment_rows

    table = Table("id", "org", "state", "contact", "created")
    for row in enrollment_rows(_registry(home)):
        table.add_row(row.id, row.org_id, row.state, row.contact, row.created_at.isoformat(timespec="seconds"))
    console.print(table)


@enrollments.command("approve")
def approve(enrollment_id: str, home: HomeOption = None) -> None:
    from coordinator.enrollment import approve as do_approve
    from coordinator.keys import CoordinatorKeys

    record = do_approve(_registry(home), CoordinatorKeys(_settings(home).pki_dir), enrollment_id)
    console.print(f"approved {record.org_id}")


@enrollments.command("reject")
def reject(enrollment_id: str, reason: Annotated[str, typer.Option()], home: HomeOption = None) -> None:
    from coordinator.enrollment import reject as do_reject

    do_reject(_registry(home), enrollment_id, reason)


@experts.command("list")
def list_experts(home: HomeOption = None) -> None:
    from coordinator.state import experts as state

    registry = _registry(home)
    table = Table("domain", "version", "org", "status", "package sha256")
    for row in state.list_experts(registry):
        table.add_row(row.domain, str(row.version), row.org_id, row.status, row.package_digest[:16])
    console.print(table)
    rejected = state.rejected_submissions(registry)
    if rejected:
        table = Table("rejected submission", "domain", "version", "org", "code")
        for row in rejected:
            table.add_row(row.id, row.domain, str(row.version), row.org_id, row.error_code)
        console.print(table)


@experts.command("set-state")
def set_state(
    domain: str,
    version: int,
    state: Annotated[str, typer.Argument(help="QUARANTINED, DEPRECATED, OPTED_OUT or ACCEPTED")],
    reason: Annotated[str, typer.Option()],
    home: HomeOption = None,
) -> None:
    from coordinator.state.experts import set_expert_state

    set_expert_state(_registry(home), domain, version, state.upper(), reason, actor="admin-cli")
    console.print(f"{domain} v{version} is now {state.upper()}")


@app.command("audit-verify")
def audit_verify(home: HomeOption = None) -> None:
    """Recompute the audit log's hash chain."""
    from coordinator.state.audit import verify

    count = verify(_registry(home))
    console.print(f"audit log intact: {count} entries")
