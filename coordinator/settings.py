"""Coordinator settings: one place, from ``coordinator.toml`` (or $BARFED_COORDINATOR_CONFIG) and BARFED_COORD_*."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from protocol.errors import BarFedError

SECRETS_DIR = Path("/run/secrets")
MiB = 1024**2
GiB = 1024**3
ARTIFACT_STORE = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._/-]*)?")


class CoordinatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BARFED_COORD_", extra="forbid")

    home: Path = Field(default=Path(".barfed/coordinator"), description="keys, database, blobs, staging, anchor")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; sqlite file under home by default")
    listen: str = Field(default="127.0.0.1:50051", description="host:port of the gRPC service (mutual TLS)")
    enroll_listen: str = Field(
        default="127.0.0.1:50052", description="host:port for enrollment only (TLS, no client certificate yet)"
    )
    api_listen: str = Field(default="127.0.0.1:8443", description="host:port of the admin REST API (HTTPS)")
    api_insecure_http: bool = Field(
        default=False, description="serve the REST API as plain HTTP; loopback only, and only when asked for by name"
    )
    api_max_body_bytes: int = Field(
        default=1 * MiB,
        ge=1024,
        description="largest REST request body (every route takes small JSON; experts upload over gRPC); larger is 413",
    )
    api_max_connections: int = Field(
        default=256,
        gt=0,
        description="REST connections held at once, TLS handshakes included; more are closed as they are accepted",
    )
    api_read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="seconds a REST client has to finish its TLS handshake, a request's head, and then its body",
    )
    api_keep_alive_s: int = Field(
        default=75,
        gt=0,
        description="an idle REST connection is closed after this (announced as Keep-Alive: timeout=N); longer than "
        "clients' own pool expiry (httpx 5 s, aiohttp 15 s), so a client never reuses one the server is closing",
    )
    public_releases: bool = Field(default=False, description="release downloads need no token")
    hub_repo: str = Field(
        default="barfed/federation",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$",
        description="the repo id Hugging Face clients (HF_ENDPOINT=the API) load releases as; revisions are rN, "
        "a channel or a release's commit id",
    )
    insecure_plaintext: bool = Field(
        default=False, description="loopback-only development mode without TLS; must be asked for by name"
    )
    hostnames: list[str] = Field(default=["localhost"], description="names in the server certificate")
    chunk_bytes: int = Field(default=1 * MiB, gt=0, le=4 * MiB)
    max_file_bytes: int = Field(default=64 * GiB, gt=0)
    max_package_bytes: int = Field(default=128 * GiB, gt=0)
    max_files: int = Field(default=64, gt=0)
    max_open_sessions_per_org: int = Field(default=4, gt=0)
    max_pending_submissions_per_org: int = Field(default=4, gt=0, description="committed, not yet verified")
    min_free_bytes: int = Field(default=512 * MiB, ge=0, description="disk kept free; uploads beyond it are refused")
    session_ttl_s: int = Field(default=24 * 3600, gt=0, description="abandoned upload sessions are removed after")
    upload_idle_s: int = Field(
        default=15 * 60,
        gt=0,
        description="an upload with no chunk made durable for this long expires (its reservation freed)",
    )
    upload_read_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="an upload stream that sends nothing for this long is ended (UPLOAD_STALLED) and gives its "
        "session up; the node resumes from the durable offsets",
    )
    grpc_keepalive_s: float = Field(
        default=30.0,
        gt=0,
        description="the gRPC servers ping a connection this often, so a client that vanished without closing it "
        "(frozen, on a dead link) is found and its calls end",
    )
    grpc_keepalive_timeout_s: float = Field(
        default=10.0, gt=0, description="a connection whose peer does not answer a ping this long is closed"
    )
    org_quota_bytes: int = Field(
        default=512 * GiB,
        gt=0,
        description="bytes one organization may hold: open uploads' reservations plus its unrejected submissions",
    )
    enroll_message_bytes: int = Field(
        default=64 * 1024, ge=16 * 1024, le=1 * MiB, description="largest message the anonymous enrollment port reads"
    )
    enroll_calls_per_minute: int = Field(default=30, gt=0, description="sustained calls per peer address, enrollment")
    enroll_burst: int = Field(default=20, gt=0, description="calls a peer may make at once before the rate applies")
    enroll_in_flight: int = Field(default=8, gt=0, description="enrollment calls handled at once; more are refused")
    sync_every_bytes: int = Field(
        default=16 * MiB, gt=0, description="uploads fsync and record durable progress at least this often"
    )
    max_shared_drift: float = Field(
        default=0.9, gt=0, description="bound on ||expert - anchor|| / ||anchor|| for every shared tensor"
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker; default: an SQLite file home/broker.db (no server). At scale redis://host:6379/N",
    )
    task_queue: str = Field(
        default="barfed", min_length=1, max_length=64, description="broker queue of this federation's jobs"
    )
    job_lease_s: float = Field(
        default=60.0, gt=0, description="a job whose worker stops renewing its lease this long is taken over"
    )
    sweep_interval_s: float = Field(
        default=5.0, gt=0, description="how often serve (re)dispatches queued jobs and jobs whose lease ran out"
    )
    worker_concurrency: int = Field(default=1, gt=0, le=64, description="jobs one worker runs at once (threads)")
    task_imports: list[str] = Field(
        default=[], description="modules every worker imports at start (handlers they add to runner.HANDLERS)"
    )
    router_recipe: str = Field(default="tiny", description="router recipe (name or TOML path) release builds use")
    eval_examples: int = Field(default=100, gt=0, le=10000, description="coordinator's held-out problems per domain")
    gate_tolerance: float = Field(
        default=8.0,
        ge=0,
        description="points a domain may score below the parent release before the gate refuses; 8 is above "
        "every move of an unchanged domain measured between consecutive builds (docs/PERFORMANCE.md)",
    )
    gate_tolerances: dict[str, float] = Field(default={}, description="per-domain overrides of gate_tolerance")
    min_retention: float = Field(
        default=0.1,
        ge=0,
        le=10,
        description="least share of its own expert's score (evaluated alone) a domain must keep before the gate "
        "refuses; 0.1 is below every build of the demo's experts measured (lowest 0.17) and above an untrained "
        "router's 0 (docs/PERFORMANCE.md)",
    )
    min_retentions: dict[str, float] = Field(default={}, description="per-domain overrides of min_retention")
    min_own_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="least share of its domain's routing mass an expert must receive before the gate refuses (a "
        "collapsed router); 0.05 is below every expert of the demo's releases (lowest 0.38) and above a router that "
        "sends an expert nothing (0.00) (docs/PERFORMANCE.md)",
    )
    min_own_shares: dict[str, float] = Field(default={}, description="per-domain overrides of min_own_share")
    top_k: int | None = Field(
        default=None,
        gt=0,
        le=256,
        description="experts per token (anchor included) in every release, so serving computes at most top_k FFNs; "
        "unset: the router recipe's (all by default); a release with fewer slots routes to all",
    )
    build_threads: int = Field(
        default=1, gt=0, le=256, description="torch threads of a release build; fixed so a rebuild matches bit for bit"
    )
    auto_build: bool = Field(default=True, description="build a release when an expert is accepted or withdrawn")
    build_debounce_s: float = Field(default=10.0, ge=0, description="quiet time after a trigger before a build")
    announce_redis_url: str | None = Field(
        default=None, description="redis://… to announce every publish on the pub/sub channel barfed:releases"
    )
    artifact_store: str = Field(
        default="",
        description="s3://bucket[/prefix]: blobs, the anchor, build scratch and releases go there too, so workers "
        "need no shared filesystem, and downloads redirect to it (presigned); empty: everything lives under home",
    )
    cache_max_gb: float = Field(
        default=50.0,
        gt=0,
        description="with artifact_store: the size each local cache of the store keeps (blobs under home/blobs, "
        "releases under home/cache), least recently used removed beyond it",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="the S3 server, e.g. http://127.0.0.1:8333 (SeaweedFS); unset: AWS's for s3_region"
    )
    s3_public_endpoint_url: str | None = Field(
        default=None, description="the S3 server as users reach it, for presigned download URLs; unset: s3_endpoint_url"
    )
    s3_region: str = Field(default="us-east-1", min_length=1, description="the bucket's region")
    s3_credentials_file: Path | None = Field(
        default=None,
        description="JSON {access_key_id, secret_access_key}; unset: the standard AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY",
    )
    s3_retry_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="how long a failing S3 request is retried (backoff) before it fails"
    )
    presign_expires_s: int = Field(
        default=300, ge=10, le=7 * 24 * 3600, description="life of a presigned download URL handed to a client"
    )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Secret files (docker/compose `secrets:`): a file named like the variable, e.g. barfed_coord_database_url,
        # in $BARFED_COORD_SECRETS_DIR, else in /run/secrets when that exists. Precedence: env > file > TOML.
        secrets = SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir())
        return (init_settings, env_settings, secrets, TomlConfigSettingsSource(settings_cls, toml_file=toml_file()))

    @field_validator("artifact_store")
    @classmethod
    def _s3_url(cls, value: str) -> str:
        if value and not ARTIFACT_STORE.fullmatch(value):
            raise ValueError(
                "must be s3://bucket or s3://bucket/prefix (a bucket name is 3-63 lowercase letters, digits, dots "
                "and hyphens; a prefix letters, digits and ._/-), or empty to keep releases under home only"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _plaintext_only_on_loopback(self) -> CoordinatorSettings:
        if self.insecure_plaintext and not (is_loopback(self.listen) and is_loopback(self.enroll_listen)):
            raise ValueError("insecure_plaintext is only allowed on a loopback address (127.0.0.1 or [::1])")
        if self.api_insecure_http and not is_loopback(self.api_listen):
            raise ValueError("api_insecure_http is only allowed on a loopback address (127.0.0.1 or [::1])")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'registry.db').resolve()}"

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def staging_dir(self) -> Path:
        """Inside the blob store, so a commit's rename from staging never crosses filesystems (EXDEV)."""
        return self.blob_dir / ".staging"

    @property
    def anchor_dir(self) -> Path:
        return self.home / "anchor"

    @property
    def releases_dir(self) -> Path:
        return self.home / "releases"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def pki_dir(self) -> Path:
        return self.home / "pki"


def is_loopback(listen: str) -> bool:
    """Whether a ``host:port`` listens on loopback only."""
    return is_loopback_host(listen.rsplit(":", 1)[0].strip("[]"))


def is_loopback_host(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def toml_file() -> Path:
    return Path(os.environ.get("BARFED_COORDINATOR_CONFIG", "coordinator.toml"))


def secrets_dir() -> Path | None:
    found = os.environ.get("BARFED_COORD_SECRETS_DIR")
    return Path(found) if found else (SECRETS_DIR if SECRETS_DIR.is_dir() else None)


def load_settings(**overrides) -> CoordinatorSettings:
    """The settings, or BAD_SETTINGS on one line naming where each wrong value came from and what is wrong."""
    try:
        return CoordinatorSettings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_problem(error, overrides) for error in exc.errors(include_url=False))
        raise BarFedError("BAD_SETTINGS", f"{problems}; correct it, or remove it to take the default.") from None
    except ValueError as exc:  # the TOML file does not parse
        reason = " ".join(str(exc).split())
        raise BarFedError("BAD_SETTINGS", f"{toml_file()} is not valid TOML ({reason}); correct the file.") from None


def _problem(error, overrides: dict) -> str:
    """``$BARFED_COORD_JOB_LEASE_S: job_lease_s: Input should be a valid number``: the source, the field, why."""
    field = ".".join(str(part) for part in error["loc"])
    reason = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        reason = "there is no such setting"
    name = str(error["loc"][0]) if error["loc"] else ""
    variable = f"BARFED_COORD_{name}".upper()
    secrets = secrets_dir()
    if not name:
        source = "coordinator settings"
    elif name in overrides:
        source = f"--{name.replace('_', '-')}"
    elif any(key.upper() == variable for key in os.environ):
        source = f"${variable}"
    elif secrets is not None and (secrets / variable.lower()).is_file():
        source = str(secrets / variable.lower())
    else:
        source = str(toml_file())
    return f"{source}: {field}: {reason}" if name else f"{source}: {reason}"
