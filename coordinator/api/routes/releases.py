"""Releases and channels: build (queued and dispatched now), list, show (release.json), promote, roll back, diff.

The same functions as `barfed coordinator releases …` (coordinator/release/actions.py). Every role reads
releases (an org token too; no token at all when `public_releases` is set, as for downloads); admins and
operators build and move channels. Files and their download are coordinator/api/downloads.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.deps import ROLES, CurrentPrincipal, CurrentRuntime, OptionalPrincipal, allow, dispatch, runtime
from coordinator.api.fields import DOMAIN_KEYS, DomainName, Strict, Version
from coordinator.api.routes.jobs import JobOut
from coordinator.release import actions
from coordinator.state import releases as store
from protocol.errors import BarFedError
from protocol.release import ReleaseManifest

router = APIRouter(tags=["releases"])
CHANGERS = ("admin", "operator")
NAME = r"^(r?[0-9]{1,9}|[a-z][a-z0-9-]{0,31})$"  # rN, N or a channel
ReleaseName = Annotated[str, Path(pattern=NAME, max_length=32, description="rN or a channel (latest, stable, …)")]
ChannelPath = Annotated[str, Path(pattern=store.CHANNEL_NAME, max_length=32)]


def release_reader(request: Request, principal: OptionalPrincipal) -> None:
    """Any valid token may read releases; without one only when the operator made releases public."""
    if principal is None and not runtime(request).settings.public_releases:
        raise BarFedError("NO_TOKEN", "reading releases needs an API token: send `Authorization: Bearer <token>`.")


READ = {
    "dependencies": [Depends(release_reader)],
    "openapi_extra": {"x-roles": list(ROLES), "x-public-when": "public_releases"},
    "description": f"Roles: {', '.join(ROLES)}; no token needed when `public_releases` is set.",
}


class BuildBody(Strict):
    pins: dict[DomainName, Version] = Field(
        default_factory=dict,
        max_length=actions.MAX_PINS,
        description="domain → the ACCEPTED version to build from",
        json_schema_extra=DOMAIN_KEYS,
    )
    force: bool = Field(default=False, description="publish even if the gate refuses (the audit log names you)")
    cold: bool = Field(
        default=False,
        description="train every router row from scratch (no rows carried from the parent); allowed when nothing "
        "changed",
    )


class ReleaseExpertRef(BaseModel):
    domain: str
    version: int
    org: str
    package_digest: str


class RetentionOut(BaseModel):
    expert: float | None = Field(description="the domain's expert alone (the anchor for general), same problems")
    release: float | None = Field(description="the release's score")
    retention: float | None = Field(description="release / expert; null when the expert scores 0")
    difference: float | None = Field(description="release - expert, in points")


class RoutingOut(BaseModel):
    own_share: float | None = Field(description="routing mass the domain's held-out tokens give its own expert")
    anchor_share: float | None = Field(description="... and the anchor; both means over layers")
    load: float | None = Field(description="the domain's slot's share of every measured token")


class ReleaseOut(BaseModel):
    name: str
    number: int
    parent: str | None
    experts: list[ReleaseExpertRef]
    eval: dict[str, float | None] = Field(description="domain → the coordinator's held-out score")
    retention: dict[str, RetentionOut] = Field(
        default_factory=dict, description="domain → how much of its own expert's score the release keeps"
    )
    routing: dict[str, RoutingOut] = Field(
        default_factory=dict, description="domain → how its tokens are routed and its slot's load (a collapsing router)"
    )
    channels: list[str]
    forced_by: str
    manifest_sha256: str = Field(description="sha256 of release.json")
    published_at: dt.datetime


class PromoteBody(Strict):
    channel: str = Field(
        pattern=store.CHANNEL_NAME,
        max_length=32,
        description="any channel but latest (which always follows the newest release): BAD_CHANNEL (400)",
        json_schema_extra={"not": {"const": "latest"}},
    )


class ChannelMoveOut(BaseModel):
    channel: str
    release: str
    previous: str | None = Field(description="where the channel pointed before; the release itself when it was there")
    moved: bool = Field(default=True, description="false when the channel already pointed there: nothing changed")


class ChannelOut(BaseModel):
    name: str
    release: str


class VersionChange(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: int = Field(alias="from")
    to: int


class ScoreChange(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: float | None = Field(alias="from")
    to: float | None
    delta: float | None


class RetentionChange(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: float | None = Field(alias="from")
    to: float | None


class DiffOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    added: dict[str, int]
    removed: dict[str, int]
    changed: dict[str, VersionChange]
    eval: dict[str, ScoreChange]
    retention: dict[str, RetentionChange] = Field(default_factory=dict)


def _release(row, channels: list[str]) -> ReleaseOut:
    return ReleaseOut(
        name=f"r{row.number}",
        number=row.number,
        parent=f"r{row.parent}" if row.parent else None,
        experts=[
            ReleaseExpertRef(**{k: e[k] for k in ("domain", "version", "org", "package_digest")}) for e in row.experts
        ],
        eval=row.eval,
        retention=row.retention or {},
        routing=row.routing or {},
        channels=channels,
        forced_by=row.forced_by,
        manifest_sha256=row.manifest_sha256,
        published_at=row.published_at,
    )


@router.post(
    "/releases/builds",
    status_code=202,
    response_model=JobOut,
    summary="Queue a release build, dispatched now (follow it at /v1/jobs/{id}); NOTHING_CHANGED (409) when the "
    "latest release holds exactly these experts, unless force or cold",
    **allow(*CHANGERS),
)
def build(body: BuildBody, request: Request, runtime: CurrentRuntime, principal: CurrentPrincipal) -> JobOut:
    job = actions.request_build(runtime.registry, dict(body.pins), body.force, principal.actor, cold=body.cold)
    dispatch(request, job.id)
    return JobOut.model_validate(job)


@router.get("/releases", response_model=list[ReleaseOut], summary="Published releases, oldest first", **READ)
def list_releases(runtime: CurrentRuntime) -> list[ReleaseOut]:
    positions: dict[int, list[str]] = {}
    for name, number in store.channels(runtime.registry).items():
        positions.setdefault(number, []).append(name)
    return [_release(row, sorted(positions.get(row.number, []))) for row in store.list_releases(runtime.registry)]


@router.get(
    "/releases/{name}",
    response_model=ReleaseManifest,
    summary="A release's release.json, its wall_s with the sign and publish times its build job measured after",
    **READ,
)
def show_release(name: ReleaseName, runtime: CurrentRuntime) -> ReleaseManifest:
    _, manifest = actions.show(runtime.settings, runtime.registry, name)
    return manifest


@router.post(
    "/releases/{name}/promote",
    response_model=ChannelMoveOut,
    summary="Point a channel (stable, or any but latest) at a release; one already there stays (moved: false)",
    **allow(*CHANGERS),
)
def promote(name: ReleaseName, body: PromoteBody, runtime: CurrentRuntime, principal: CurrentPrincipal):
    number, previous = actions.promote(runtime.registry, name, body.channel, principal.actor)
    return ChannelMoveOut(
        channel=body.channel,
        release=f"r{number}",
        previous=f"r{previous}" if previous else None,
        moved=previous != number,
    )


@router.post(
    "/channels/{channel}/rollback",
    response_model=ChannelMoveOut,
    summary="Move a channel back to where it pointed before",
    **allow(*CHANGERS),
)
def rollback(channel: ChannelPath, runtime: CurrentRuntime, principal: CurrentPrincipal) -> ChannelMoveOut:
    current, target = actions.rollback(runtime.registry, channel, principal.actor)
    return ChannelMoveOut(channel=channel, release=f"r{target}", previous=f"r{current}")


@router.get(
    "/releases/{a}/diff/{b}",
    response_model=DiffOut,
    summary="Experts added, removed or changed from A to B, and every domain's score delta",
    **READ,
)
def diff(
    a: Annotated[str, Path(pattern=NAME, max_length=32)],
    b: Annotated[str, Path(pattern=NAME, max_length=32)],
    runtime: CurrentRuntime,
) -> DiffOut:
    return DiffOut.model_validate(actions.diff(runtime.registry, a, b))


@router.get("/channels", response_model=list[ChannelOut], summary="Every channel and the release it points at", **READ)
def list_channels(runtime: CurrentRuntime) -> list[ChannelOut]:
    return [ChannelOut(name=name, release=f"r{number}") for name, number in store.channels(runtime.registry).items()]
