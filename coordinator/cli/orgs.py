"""`barfed coordinator orgs …` and `enrollments …`: invite and revoke organizations, decide their enrollments."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from coordinator.cli.common import HomeOption, console, registry_for, settings_for, timestamp

orgs = typer.Typer(help="Organizations: invite, revoke.", no_args_is_help=True)
enrollments = typer.Typer(help="Enrollment requests: list, approve, reject.", no_args_is_help=True)


@orgs.command("invite")
def invite(
    org_id: str,
    domains: Annotated[str, typer.Option(help="comma-separated domains the org may publish")],
    home: HomeOption = None,
) -> None:
    """Invite an organization; prints the one-time enrollment token to hand it out of band."""
    from coordinator.enrollment import invite as do_invite

    token = do_invite(registry_for(home), org_id, [d.strip() for d in domains.split(",") if d.strip()])
    typer.echo(token)


@orgs.command("revoke")
def revoke(org_id: str, reason: Annotated[str, typer.Option()], home: HomeOption = None) -> None:
    """Revoke an organization: its certificate and signing key stop working at once."""
    from coordinator.enrollment import revoke as do_revoke

    do_revoke(registry_for(home), org_id, reason)
    console.print(f"{org_id} revoked")


@enrollments.command("list")
def list_enrollments(home: HomeOption = None) -> None:
    from coordinator.state.orgs import list_enrollments as enrollment_rows

    table = Table("id", "org", "state", "contact", "created")
    for row in enrollment_rows(registry_for(home)):
        table.add_row(row.id, row.org_id, row.state, row.contact, timestamp(row.created_at))
    console.print(table)


@enrollments.command("approve")
def approve(enrollment_id: str, home: HomeOption = None) -> None:
    from coordinator.enrollment import approve as do_approve
    from coordinator.keys import CoordinatorKeys

    record = do_approve(registry_for(home), CoordinatorKeys(settings_for(home).pki_dir), enrollment_id)
    console.print(f"approved {record.org_id}")


@enrollments.command("reject")
def reject(enrollment_id: str, reason: Annotated[str, typer.Option()], home: HomeOption = None) -> None:
    from coordinator.enrollment import reject as do_reject

    do_reject(registry_for(home), enrollment_id, reason)
