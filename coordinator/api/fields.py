"""Input types the resource routers share: identifiers spelled as the protocol spells them, bounded text and
numbers (a value the database cannot hold is refused with 422 here, not failed on by the database), and pages."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Generic, TypeVar

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from coordinator.state.models import as_utc
from coordinator.state.orgs import DOMAIN_NAME, MAX_DOMAINS
from protocol.pki import ORG_ID
from protocol.text import PLAIN_PATTERN, RULE, is_plain

ORG_ID_PATTERN = ORG_ID.pattern  # protocol/pki.py check_org_id
INT32 = 2**31 - 1  # the registry's integer columns
MAX_LIMIT = 500
MAX_OFFSET = 10**9
LINE = PLAIN_PATTERN  # one line of plain text (protocol/text.py), as the document states it

OrgId = Annotated[str, Field(pattern=ORG_ID_PATTERN, min_length=2, max_length=63)]
DomainName = Annotated[str, Field(pattern=DOMAIN_NAME, min_length=1, max_length=64)]
# A dict keyed by domain: pydantic states a key's pattern only as patternProperties, which admits other keys.
DOMAIN_KEYS = {"propertyNames": {"pattern": DOMAIN_NAME, "minLength": 1, "maxLength": 64}}


def _integral(value: object) -> object:
    """JSON has numbers, not integers: ``3.0`` is the integer the document's ``type: integer`` allows."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Version = Annotated[int, Field(ge=1, le=INT32), BeforeValidator(_integral)]


class Strict(BaseModel):
    """Request bodies refuse fields they do not know, so a misspelled option is an error, not a silent default,
    and values of another JSON type than the document states (``"force": 0``, ``"version": "3"``)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class FromRow(BaseModel):
    """A response read from a registry row's attributes (``Model.model_validate(row)``); a field named otherwise
    than its column says so with ``validation_alias`` (and may still be given by its own name)."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


def _plain(text: str) -> str:
    if not is_plain(text):
        raise ValueError(f"{RULE} (the gRPC API's rule too)")
    return text


Plain = Annotated[str, AfterValidator(_plain)]


class ReasonBody(Strict):
    reason: Plain = Field(
        min_length=1,
        max_length=512,
        json_schema_extra={"pattern": LINE},  # validated by `Plain`, whose refusal says the rule in words
        description=f"why, for the audit log: {RULE}",
    )


# Path and query parameters
OrgPath = Annotated[str, Path(pattern=ORG_ID_PATTERN, min_length=2, max_length=63, description="organization id")]
DomainPath = Annotated[str, Path(pattern=DOMAIN_NAME, min_length=1, max_length=64)]
VersionPath = Annotated[int, Path(ge=1, le=INT32)]
IdPath = Annotated[str, Path(pattern=r"^[0-9a-f-]{1,36}$", description="a UUID")]
JobIdPath = Annotated[int, Path(ge=1, le=INT32)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"at most this many items (≤ {MAX_LIMIT})")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="skip this many items: the previous page's next_offset")]


ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso(value: object) -> object:
    """A time as the document states it (ISO 8601): pydantic would also read ``0.5`` as Unix seconds."""
    if isinstance(value, str) and not ISO_DATE.match(value):
        raise ValueError("give an ISO 8601 time such as 2026-01-31T12:00:00Z")
    return value


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """A time as UTC (naive ones are UTC, as the registry stores every time); one UTC cannot hold is refused."""
    try:
        return None if value is None else as_utc(value)
    except OverflowError:
        raise ValueError("the time is out of range") from None


Since = Annotated[
    dt.datetime | None,
    BeforeValidator(_iso),
    AfterValidator(_utc),
    Query(description="only items created at or after this time (ISO 8601, not Unix seconds; naive times are UTC)"),
]
DomainQuery = Annotated[str | None, Query(pattern=DOMAIN_NAME, max_length=64)]
OrgQuery = Annotated[str | None, Query(pattern=ORG_ID_PATTERN, max_length=63)]


Timestamp = dt.datetime  # in responses: always UTC with its zone (RFC 3339), as the registry hands times back

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """Offset pagination over an oldest-first order of rows that are never deleted: ``next_offset`` is where the
    next page starts (null on the last page), and what a page showed never moves to a later one."""

    items: list[T]
    next_offset: int | None


def page(rows: list, offset: int, limit: int, convert) -> dict:
    """The page of ``rows`` (fetched with ``limit + 1`` to tell whether more follow)."""
    return {
        "items": [convert(row) for row in rows[:limit]],
        "next_offset": offset + limit if len(rows) > limit else None,
    }


__all__ = ["MAX_DOMAINS", "DomainName", "OrgId", "Page", "ReasonBody", "Strict", "Version", "page"]
