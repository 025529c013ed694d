"""`barfed coordinator experts …`: accepted expert versions, rejected submissions, and an expert's state."""

from __future__ import annotations

from typing import Annotated

import typer

from coordinator.cli.common import ACTOR, HomeOption, JsonOption, console, fields, print_json, registry_for, table

app = typer.Typer(help="Accepted experts and submissions.", no_args_is_help=True)
EXPERT_FIELDS = ("domain", "version", "status", "reason", "package_digest", "submission_id", "created_at")
REJECTED_FIELDS = ("id", "domain", "version", "error_code", "message", "created_at")


@app.command("list")
def list_experts(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Every expert version with its status, and the submissions verification rejected (with their code)."""
    from coordinator.state import experts as state

    registry = registry_for(home)
    experts, rejected = state.list_experts(registry), state.rejected_submissions(registry)
    if as_json:
        print_json(
            {
                "experts": [fields(row, *EXPERT_FIELDS, org="org_id") for row in experts],
                "rejected": [fields(row, *REJECTED_FIELDS, org="org_id") for row in rejected],
            }
        )
        return
    listing = table("domain", "version", "org", "status", "package sha256")
    for row in experts:
        listing.add_row(row.domain, str(row.version), row.org_id, row.status, row.package_digest[:16])
    console.print(listing)
    if rejected:
        listing = table("rejected submission", "domain", "version", "org", "code")
        for row in rejected:
            listing.add_row(row.id, row.domain, str(row.version), row.org_id, row.error_code)
        console.print(listing)


@app.command("set-state")
def set_state(
    domain: Annotated[str, typer.Argument(help="the expert's domain")],
    version: Annotated[int, typer.Argument(help="the expert's version")],
    state: Annotated[str, typer.Argument(help="QUARANTINED, DEPRECATED, OPTED_OUT or ACCEPTED")],
    reason: Annotated[str, typer.Option(help="why, for the audit log")],
    home: HomeOption = None,
) -> None:
    """Withdraw an expert version from future releases (or restore it); the auto-build policy builds anew."""
    from coordinator.state.experts import set_expert_state

    set_expert_state(registry_for(home), domain, version, state.upper(), reason, actor=ACTOR)
    console.print(f"{domain} v{version} is now {state.upper()}")
