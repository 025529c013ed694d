"""`barfed coordinator tokens …`: the REST API's bearer tokens, made and revoked on the coordinator's own host."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

import typer

from coordinator.cli.common import (
    ACTOR,
    HomeOption,
    JsonOption,
    console,
    err_console,
    fields,
    print_json,
    registry_for,
    table,
    timestamp,
)
from protocol.errors import BarFedError

app = typer.Typer(help="REST API tokens: create, list, revoke.", no_args_is_help=True)
UNITS = {"m": "minutes", "h": "hours", "d": "days"}
TOKEN_FIELDS = ("id", "role", "label", "created_by", "created_at", "expires_at")


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
    as_json: JsonOption = False,
) -> None:
    """Create a token and print it once (only its hash is kept)."""
    from coordinator.state.tokens import create as create_token

    token, row = create_token(
        registry_for(home), role, ACTOR, org_id=org, expires_at=parse_expiry(expires) if expires else None, label=label
    )
    if as_json:
        print_json({"token": token, **fields(row, *TOKEN_FIELDS, org="org_id")})
        return
    err_console.print(f"token {row.id} ({row.role}{f' of {row.org_id}' if row.org_id else ''}); shown only now:")
    typer.echo(token)


@app.command("list")
def list_tokens(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Every token (never the token itself): role, organization, label, expiry, last use, revocation."""
    from coordinator.state.tokens import list_tokens as token_rows

    rows = token_rows(registry_for(home))
    if as_json:
        print_json([fields(row, *TOKEN_FIELDS, "last_used_at", "revoked_at", org="org_id") for row in rows])
        return
    listing = table("id", "role", "org", "label", "created", "expires", "last used", "revoked")
    for row in rows:
        times = (row.created_at, row.expires_at, row.last_used_at, row.revoked_at)
        listing.add_row(row.id, row.role, row.org_id or "", row.label, *map(timestamp, times))
    console.print(listing)


@app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id, as `tokens list` shows it (not the token)")],
    home: HomeOption = None,
) -> None:
    """Revoke a token: the next call with it is refused."""
    from coordinator.state.tokens import revoke as revoke_token

    revoke_token(registry_for(home), token_id, ACTOR)
    console.print(f"token {token_id} revoked")
