"""`barfed coordinator experts …`: accepted expert versions, rejected submissions, and an expert's state."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from coordinator.cli.common import ACTOR, HomeOption, console, registry_for

app = typer.Typer(help="Accepted experts and submissions.", no_args_is_help=True)


@app.command("list")
def list_experts(home: HomeOption = None) -> None:
    from coordinator.state import experts as state

    registry = registry_for(home)
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


@app.command("set-state")
def set_state(
    domain: str,
    version: int,
    state: Annotated[str, typer.Argument(help="QUARANTINED, DEPRECATED, OPTED_OUT or ACCEPTED")],
    reason: Annotated[str, typer.Option()],
    home: HomeOption = None,
) -> None:
    from coordinator.state.experts import set_expert_state

    set_expert_state(registry_for(home), domain, version, state.upper(), reason, actor=ACTOR)
    console.print(f"{domain} v{version} is now {state.upper()}")
