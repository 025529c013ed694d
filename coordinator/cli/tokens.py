"""`barfed coordinator tokens …`: the REST API's bearer tokens, made and revoked on the coordinator's own host."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

import typer
from rich.table import Table

from coordinator.cli.common import ACTOR, HomeOption, console, err_console, registry_for, timestamp
from protocol.errors import BarFedError

app = typer.Typer(help="REST API tokens: create, list, revoke.", no_args_is_help=True)
UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_expiry(text: str) -> dt.datetime:
    """``30d``, ``12h``, ``90m`` from now, or an ISO 8601 time (UTC when it names no zone)."""
    if match := re.fullmatch(r"(\d{1,6})([mhd])", text.strip()):
        return dt.datetime.now(dt.UTC) + dt.timedelta(**{UNITS[match[2]]: int(match[1])})
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BarFedError(
            "BAD_EXPIRY", f"--expires {text!r} is neither a duration (30d, 12h) nor an ISO time."
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@app.command("create")
def create(
    role: Annotated[str, typer.Option(help="admin, operator, auditor or org")],
    org: Annotated[str | None, typer.Option(help="the organization an org token acts for")] = None,
    expires: Annotated[str | None, typer.Option(help="30d, 12h, or an ISO time; default: never")] = None,
    label: Annotated[str, typer.Option(help="what the token is for")] = "",
    home: HomeOption = None,
) -> None:
    """Create a token and print it once (only its hash is kept)."""
    from coordinator.state.tokens import create as create_token

    token, row = create_token(
        registry_for(home), role, ACTOR, org_id=org, expires_at=parse_expiry(expires) if expires else None, label=label
    )
    err_console.print(f"token {row.id} ({row.role}{f' of {row.org_id}' if row.org_id else ''}); shown only now:")
    typer.echo(token)


@app.command("list")
def list_tokens(home: HomeOption = None) -> None:
    from coordinator.state.tokens import list_tokens as rows

    table = Table("id", "role", "org", "label", "created", "expires", "last used", "revoked")
    for row in rows(registry_for(home)):
        times = (row.created_at, row.expires_at, row.last_used_at, row.revoked_at)
        table.add_row(row.id, row.role, row.org_id or "", row.label, *map(timestamp, times))
    console.print(table)


@app.command("revoke")
def revoke(token_id: str, home: HomeOption = None) -> None:
    """Revoke a token: the next call with it is refused."""
    from coordinator.state.tokens import revoke as revoke_token

    revoke_token(registry_for(home), token_id, ACTOR)
    console.print(f"token {token_id} revoked")
