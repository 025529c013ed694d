"""`barfed coordinator orgs …` and `enrollments …`: invite and revoke organizations, decide their enrollments."""

from __future__ import annotations

from typing import Annotated

import typer

from coordinator.cli.common import (
    HomeOption,
    JsonOption,
    console,
    fields,
    print_json,
    registry_for,
    settings_for,
    table,
    timestamp,
)

orgs = typer.Typer(help="Organizations: invite, revoke.", no_args_is_help=True)
enrollments = typer.Typer(help="Enrollment requests: list, approve, reject.", no_args_is_help=True)
OrgArgument = Annotated[str, typer.Argument(help="the organization's id (lowercase letters, digits, '-')")]
EnrollmentArgument = Annotated[str, typer.Argument(help="the enrollment's id, as `enrollments list` shows it")]
Reason = Annotated[str, typer.Option(help="why, for the audit log")]


@orgs.command("invite")
def invite(
    org_id: OrgArgument,
    domains: Annotated[str, typer.Option(help="comma-separated domains the org may publish (`barfed model domains`)")],
    home: HomeOption = None,
) -> None:
    """Invite an organization; prints the one-time enrollment token to hand it out of band."""
    from coordinator.enrollment import check_known_domains
    from coordinator.enrollment import invite as do_invite

    registry = registry_for(home)  # the home first: a typo in a domain is the second thing to fix
    granted = [d.strip() for d in domains.split(",") if d.strip()]
    check_known_domains(granted)
    token = do_invite(registry, org_id, granted)
    typer.echo(token)


@orgs.command("revoke")
def revoke(org_id: OrgArgument, reason: Reason, home: HomeOption = None) -> None:
    """Revoke an organization: its certificate, signing key and API tokens stop working at once."""
    from coordinator.enrollment import revoke as do_revoke

    do_revoke(registry_for(home), org_id, reason)
    console.print(f"{org_id} revoked")


@enrollments.command("list")
def list_enrollments(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Every enrollment, oldest first: invited, pending (waiting for you), approved or rejected."""
    from coordinator.state.orgs import list_enrollments as enrollment_rows

    rows = enrollment_rows(registry_for(home))
    if as_json:
        print_json([fields(row, "id", "state", "contact", "reason", "created_at", org="org_id") for row in rows])
        return
    listing = table("id", "org", "state", "contact", "created")
    for row in rows:
        listing.add_row(row.id, row.org_id, row.state, row.contact, timestamp(row.created_at))
    console.print(listing)


@enrollments.command("approve")
def approve(enrollment_id: EnrollmentArgument, home: HomeOption = None) -> None:
    """Approve a pending enrollment: the CA issues the organization's certificate and pins its signing key."""
    from coordinator.enrollment import approve as do_approve
    from coordinator.keys import CoordinatorKeys

    settings = settings_for(home)
    record = do_approve(registry_for(home, settings), CoordinatorKeys(settings.pki_dir), enrollment_id)
    console.print(f"approved {record.org_id}")


@enrollments.command("reject")
def reject(enrollment_id: EnrollmentArgument, reason: Reason, home: HomeOption = None) -> None:
    """Reject a pending enrollment; the organization needs a new invitation to try again."""
    from coordinator.enrollment import reject as do_reject

    do_reject(registry_for(home), enrollment_id, reason)
    console.print(f"rejected enrollment {enrollment_id}")
