"""The REST API's authorization matrix, in one place: for every route of the app, the status each kind of caller
gets, and how to make one call of it. test_api_matrix.py checks every route of `create_app` against this table
(a route missing here fails), and test_api_schema.py fuzzes the same app from the same world.

To add a route: add an `Entry` to MATRIX under "METHOD /path" exactly as FastAPI spells the path, with `expect`
(usually `allowed(...)`) and `prepare`, which makes a fresh target when a successful call changes something
(a new org to revoke, a queued job to cancel), so every allowed caller succeeds in turn.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select, update

from coordinator import enrollment
from coordinator.api.app import create_app
from coordinator.release import publish
from coordinator.runtime import Runtime
from coordinator.setup import initialize
from coordinator.state import audit, jobs, tokens
from coordinator.state import releases as release_state
from coordinator.state.models import ApiToken, Base, Domain, Expert, Submission, utcnow
from coordinator.tasks.heartbeat import heartbeat_dir
from protocol import pki
from protocol.release import write_manifest
from protocol.signing import sign_directory

from .conftest import make_settings
from .fake_release import stub_manifest

ROLE_CALLERS = ("admin", "operator", "auditor", "org", "other_org")  # other_org: an org token of another org
BAD_CALLERS = ("anonymous", "malformed", "expired", "revoked")  # no token, not a token, expired, revoked
CALLERS = ROLE_CALLERS + BAD_CALLERS
READ_ALL = ("admin", "operator", "auditor")
EVERY_ROLE = (*READ_ALL, "org")
CHANGERS = ("admin", "operator")

ORG, OTHER = "org-alpha", "org-beta"
DOMAIN, OTHER_DOMAIN = "alpha-math", "beta-code"


@dataclass
class Call:
    path: str
    json: dict | None = None
    params: dict | None = None


@dataclass
class World:
    """A coordinator's registry with two enrolled orgs, experts, submissions, two releases and a job; a token of
    every kind; and fresh names for targets."""

    runtime: Runtime
    app: object
    headers: dict[str, dict[str, str]]  # caller → request headers
    actors: dict[str, str]  # caller → how the audit log names it
    submission: str = ""  # ORG's accepted submission
    rejected: str = ""  # OTHER's rejected submission
    job: int = 0
    _names: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def registry(self):
        return self.runtime.registry

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{next(self._names)}"

    def fresh_domain(self) -> str:
        """A domain the coordinator knows (the REST API grants no other) that no organization owns yet."""
        from bar_model.domains import domain_names

        with self.registry.session() as session:
            owned = set(session.scalars(select(Domain.name)))
        return next(name for name in domain_names() if name.startswith("p-") and name not in owned)

    def invited_org(self) -> str:
        org = self.fresh("org-new")
        enrollment.invite(self.registry, org, [self.fresh("dom")], actor="test")
        return org

    def pending_enrollment(self) -> str:
        org = self.fresh("org-enrolling")
        return request_enrollment(self.registry, org, [self.fresh("dom")]).id

    def accepted_expert(self) -> tuple[str, int]:
        """A new ACCEPTED version of ORG's domain, as verification leaves one."""
        with self.registry.session() as session:
            version = 1 + max(session.scalars(select(Expert.version).where(Expert.domain == DOMAIN)), default=0)
        add_expert(self.registry, ORG, DOMAIN, version)
        return DOMAIN, version

    def job_in(self, state: str) -> int:
        job = jobs.queue(self.registry, "build", self.fresh("matrix"), {"pins": {}, "force": False}, actor="test")
        if state == "cancelled":
            jobs.cancel(self.registry, job.id, actor="test")
        return job.id

    def channel_with_history(self) -> str:
        channel = self.fresh("ch")
        release_state.move_channel(self.registry, channel, 1, "test")
        release_state.move_channel(self.registry, channel, 2, "test")
        return channel


def request_enrollment(registry, org: str, domains: list[str]):
    """Invite ``org`` and redeem the invitation with a CSR, as a node does: a pending enrollment."""
    token = enrollment.invite(registry, org, domains, actor="test")
    return enrollment.enroll(registry, org, pki.make_csr(pki.generate_private_key(), org).decode(), token)


def add_expert(registry, org: str, domain: str, version: int, state: str = "ACCEPTED", code: str = "") -> str:
    """A submission with the outcome verification records (an Expert row when accepted); no package bytes."""
    import uuid

    files = {"expert.json": "0" * 64, "model.safetensors": "1" * 64}
    with registry.session() as session:
        submission = Submission(
            id=str(uuid.uuid4()),
            org_id=org,
            domain=domain,
            version=version,
            state=state,
            files=files,
            package_digest="0" * 64,
            error_code=code,
            message="the signature does not verify with the org's key; sign with the enrolled key." if code else "",
        )
        session.add(submission)
        session.flush()
        if state == "ACCEPTED":
            session.add(
                Expert(
                    submission_id=submission.id,
                    org_id=org,
                    domain=domain,
                    version=version,
                    package_digest=submission.package_digest,
                    files=files,
                )
            )
        audit.record(session, "test", f"submission.{state.lower()}", submission.id)
        return submission.id


def add_release(runtime: Runtime, number: int, experts: list[dict]) -> None:
    """A release directory holding only its release.json (no model files), recorded as a publish records it."""
    final = runtime.settings.releases_dir / f"r{number}"
    final.mkdir(parents=True)
    manifest = stub_manifest(number, experts)
    write_manifest(final, manifest)
    publish.record(runtime.registry, final, manifest, "test")


def make_world(root: Path, db_url: str, **settings) -> World:
    config = make_settings(root, db_url, **settings)
    initialize(config)
    runtime = Runtime.from_settings(config)
    registry = runtime.registry
    for org, domain in ((ORG, DOMAIN), (OTHER, OTHER_DOMAIN)):
        pending = request_enrollment(registry, org, [domain])
        enrollment.approve(registry, runtime.keys, pending.id, actor="test")
    world = World(runtime, create_app(runtime), {}, {})
    world.submission = add_expert(registry, ORG, DOMAIN, 1)
    add_expert(registry, OTHER, OTHER_DOMAIN, 1)
    world.rejected = add_expert(registry, OTHER, OTHER_DOMAIN, 2, state="REJECTED", code="BAD_SIGNATURE")
    refs = [{"domain": DOMAIN, "version": 1, "org": ORG, "package_digest": "0" * 64}]
    add_release(runtime, 1, refs)
    add_release(runtime, 2, [*refs, {"domain": OTHER_DOMAIN, "version": 1, "org": OTHER, "package_digest": "1" * 64}])
    world.job = world.job_in("queued")

    made = {
        "admin": tokens.create(registry, "admin", "test"),
        "operator": tokens.create(registry, "operator", "test"),
        "auditor": tokens.create(registry, "auditor", "test"),
        "org": tokens.create(registry, "org", "test", org_id=ORG),
        "other_org": tokens.create(registry, "org", "test", org_id=OTHER),
        "expired": tokens.create(registry, "admin", "test", expires_at=utcnow() + dt.timedelta(days=1)),
        "revoked": tokens.create(registry, "admin", "test"),
    }
    tokens.revoke(registry, made["revoked"][1].id, "test")
    with registry.session() as session:  # expiry is refused in the past at creation; let this one run out
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == made["expired"][1].id)
            .values(expires_at=utcnow() - dt.timedelta(seconds=1))
        )
    from coordinator.api.deps import Principal

    for caller, (token, row) in made.items():
        world.headers[caller] = {"Authorization": f"Bearer {token}"}
        world.actors[caller] = Principal(row.id, row.role, row.org_id).actor
    world.headers["anonymous"] = {}
    world.headers["malformed"] = {"Authorization": "Bearer not-a-barfed-token"}
    return world


def allowed(roles: tuple[str, ...], ok: int = 200, **overrides: int) -> dict[str, int]:
    """``ok`` for the roles named (other_org counts as org), 403 for the other roles, 401 for every bad token."""
    statuses = {}
    for caller in ROLE_CALLERS:
        role = "org" if caller == "other_org" else caller
        statuses[caller] = ok if role in roles else 403
    statuses.update(dict.fromkeys(BAD_CALLERS, 401))
    statuses.update(overrides)
    return statuses


def public(ok: int = 200) -> dict[str, int]:
    return dict.fromkeys(CALLERS, ok)


@dataclass(frozen=True)
class Entry:
    expect: dict[str, int]
    prepare: Callable[[World], Call]
    changes: bool = False  # an allowed call changes the registry (and must write an audit entry naming its caller)


def fixed(path: str, **kwargs) -> Callable[[World], Call]:
    return lambda world: Call(path, **kwargs)


def _expert_change(action: str) -> Entry:
    def prepare(world: World) -> Call:
        domain, version = world.accepted_expert()
        return Call(f"/v1/experts/{domain}/{version}/{action}", json={"reason": "matrix"})

    return Entry(allowed(CHANGERS), prepare, changes=True)


HUB_REPO = "barfed/federation"


def signed(path: str, **kwargs) -> Callable[[World], Call]:
    """A call on the world's releases once r1 and r2 carry the release key's signature, as published ones do."""

    def prepare(world: World) -> Call:
        for number in (1, 2):
            directory = world.runtime.settings.releases_dir / f"r{number}"
            if not (directory / "model.sig").exists():
                sign_directory(directory, world.runtime.keys.release_key_path)
        return Call(path, **kwargs)

    return prepare


def ready(path: str) -> Callable[[World], Call]:
    """/readyz as a coordinator with a live worker answers it: a fresh heartbeat file stands for the worker."""

    def prepare(world: World) -> Call:
        beats = heartbeat_dir(world.runtime.settings)
        beats.mkdir(parents=True, exist_ok=True)
        (beats / "matrix@test").write_text("{}")
        return Call(path)

    return prepare


MATRIX: dict[str, Entry] = {
    # the app itself
    "GET /healthz": Entry(public(), fixed("/healthz")),
    "GET /openapi.json": Entry(public(), fixed("/openapi.json")),
    "GET /docs": Entry(public(), fixed("/docs")),
    "GET /docs/oauth2-redirect": Entry(public(), fixed("/docs/oauth2-redirect")),
    "GET /redoc": Entry(public(), fixed("/redoc")),
    # organizations and enrollments
    "POST /v1/orgs": Entry(
        allowed(("admin",), 201),
        lambda w: Call("/v1/orgs", json={"org": w.fresh("org-invited"), "domains": [w.fresh_domain()]}),
        changes=True,
    ),
    "GET /v1/orgs": Entry(allowed(READ_ALL), fixed("/v1/orgs")),
    "GET /v1/orgs/{org}": Entry(allowed(READ_ALL), fixed(f"/v1/orgs/{ORG}")),
    "POST /v1/orgs/{org}/domains": Entry(
        allowed(("admin",)),
        lambda w: Call(f"/v1/orgs/{w.invited_org()}/domains", json={"domains": [w.fresh_domain()]}),
        changes=True,
    ),
    "POST /v1/orgs/{org}/revoke": Entry(
        allowed(("admin",)),
        lambda w: Call(f"/v1/orgs/{w.invited_org()}/revoke", json={"reason": "matrix"}),
        changes=True,
    ),
    "GET /v1/enrollments": Entry(allowed(READ_ALL), fixed("/v1/enrollments")),
    "POST /v1/enrollments/{enrollment_id}/approve": Entry(
        allowed(("admin",)), lambda w: Call(f"/v1/enrollments/{w.pending_enrollment()}/approve"), changes=True
    ),
    "POST /v1/enrollments/{enrollment_id}/reject": Entry(
        allowed(("admin",)),
        lambda w: Call(f"/v1/enrollments/{w.pending_enrollment()}/reject", json={"reason": "matrix"}),
        changes=True,
    ),
    # experts and submissions: an org sees its own only
    "GET /v1/experts": Entry(allowed(EVERY_ROLE), fixed("/v1/experts")),
    "GET /v1/experts/{domain}/{version}": Entry(allowed(EVERY_ROLE, other_org=404), fixed(f"/v1/experts/{DOMAIN}/1")),
    "POST /v1/experts/{domain}/{version}/quarantine": _expert_change("quarantine"),
    "POST /v1/experts/{domain}/{version}/deprecate": _expert_change("deprecate"),
    "POST /v1/experts/{domain}/{version}/opt-out": _expert_change("opt-out"),
    "GET /v1/submissions": Entry(allowed(EVERY_ROLE), fixed("/v1/submissions", params={"limit": 5})),
    "GET /v1/submissions/{submission_id}": Entry(
        allowed(EVERY_ROLE, other_org=404), lambda w: Call(f"/v1/submissions/{w.submission}")
    ),
    # releases and channels
    "POST /v1/releases/builds": Entry(
        allowed(CHANGERS, 202), fixed("/v1/releases/builds", json={"pins": {}, "force": False}), changes=True
    ),
    "GET /v1/releases": Entry(allowed(EVERY_ROLE), fixed("/v1/releases")),
    "GET /v1/releases/{name}": Entry(allowed(EVERY_ROLE), fixed("/v1/releases/latest")),
    "POST /v1/releases/{name}/promote": Entry(
        allowed(CHANGERS), lambda w: Call("/v1/releases/r1/promote", json={"channel": w.fresh("ch")}), changes=True
    ),
    "POST /v1/channels/{channel}/rollback": Entry(
        allowed(CHANGERS), lambda w: Call(f"/v1/channels/{w.channel_with_history()}/rollback"), changes=True
    ),
    "GET /v1/releases/{a}/diff/{b}": Entry(allowed(EVERY_ROLE), fixed("/v1/releases/r1/diff/r2")),
    "GET /v1/channels": Entry(allowed(EVERY_ROLE), fixed("/v1/channels")),
    # jobs
    "GET /v1/jobs": Entry(allowed(READ_ALL), fixed("/v1/jobs", params={"state": "queued"})),
    "GET /v1/jobs/{job_id}": Entry(allowed(READ_ALL), lambda w: Call(f"/v1/jobs/{w.job}")),
    "POST /v1/jobs/{job_id}/retry": Entry(
        allowed(CHANGERS), lambda w: Call(f"/v1/jobs/{w.job_in('cancelled')}/retry"), changes=True
    ),
    "POST /v1/jobs/{job_id}/cancel": Entry(
        allowed(CHANGERS), lambda w: Call(f"/v1/jobs/{w.job_in('queued')}/cancel"), changes=True
    ),
    # audit: every reading role, never an org
    "GET /v1/audit": Entry(allowed(READ_ALL), fixed("/v1/audit", params={"subject": "org-"})),
    "POST /v1/audit/verify": Entry(allowed(READ_ALL), fixed("/v1/audit/verify")),
    # the release key (public) and the Hub-compatible read API (any token; a release must be signed to be served)
    "GET /v1/keys/release": Entry(public(), fixed("/v1/keys/release")),
    "GET /api/models/{repo_id:path}": Entry(allowed(EVERY_ROLE), signed(f"/api/models/{HUB_REPO}")),
    "GET /api/models/{repo_id:path}/revision/{revision}": Entry(
        allowed(EVERY_ROLE), signed(f"/api/models/{HUB_REPO}/revision/r1")
    ),
    "GET /api/models/{repo_id:path}/tree/{revision}": Entry(
        allowed(EVERY_ROLE), signed(f"/api/models/{HUB_REPO}/tree/latest", params={"recursive": "true"})
    ),
    "GET /api/models/{repo_id:path}/tree/{revision}/{path:path}": Entry(  # releases are flat: no folder to list
        allowed(EVERY_ROLE, 404), signed(f"/api/models/{HUB_REPO}/tree/r1/additional_chat_templates")
    ),
    "GET /{repo_id:path}/resolve/{revision}/{filename:path}": Entry(
        allowed(EVERY_ROLE), signed(f"/{HUB_REPO}/resolve/r1/release.json")
    ),
    "HEAD /{repo_id:path}/resolve/{revision}/{filename:path}": Entry(
        allowed(EVERY_ROLE), signed(f"/{HUB_REPO}/resolve/stable/release.json")
    ),
    # downloads (any token; public_releases is off here), metrics (every reading role), readiness (no token)
    "GET /v1/releases/{name}/files": Entry(allowed(EVERY_ROLE), signed("/v1/releases/stable/files")),
    "GET /v1/releases/{name}/files/{path:path}": Entry(
        allowed(EVERY_ROLE), signed("/v1/releases/r1/files/release.json")
    ),
    "HEAD /v1/releases/{name}/files/{path:path}": Entry(
        allowed(EVERY_ROLE), signed("/v1/releases/latest/files/release.json")
    ),
    "GET /v1/releases/{name}/signature": Entry(allowed(EVERY_ROLE), signed("/v1/releases/r2/signature")),
    "HEAD /v1/releases/{name}/signature": Entry(allowed(EVERY_ROLE), signed("/v1/releases/r1/signature")),
    "GET /metrics": Entry(allowed(READ_ALL), fixed("/metrics")),
    "GET /readyz": Entry(public(), ready("/readyz")),
}


def routes_of(app) -> list[str]:
    """Every "METHOD /path" the app serves, through included routers (the HEAD Starlette adds beside a GET of
    its own routes left out)."""
    found = []
    for route in iter_route_contexts(app.routes):
        methods = set(route.methods or ())
        if not isinstance(route.original_route, APIRoute) and "GET" in methods:
            methods.discard("HEAD")
        found += [f"{method} {route.path}" for method in sorted(methods)]
    return sorted(found)


def snapshot(registry) -> dict[str, list]:
    """Every row of every table (but a token's last use, which reading with it records)."""
    tables = {}
    with registry.session() as session:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if not (table.name == "api_tokens" and c.name == "last_used_at")]
            rows = session.execute(select(*columns)).all()
            tables[table.name] = sorted(repr(tuple(row)) for row in rows)
    return tables
