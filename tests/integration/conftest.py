"""A real coordinator on loopback (mTLS), on SQLite and on the local PostgreSQL, with enrolled organizations."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


@contextlib.contextmanager
def fresh_database(kind: str, directory: Path):
    """A fresh, empty database: a SQLite file, or a new schema in the local PostgreSQL."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'registry.db'}"
        return
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # CI starts the server; a dead one is a failure, not a skip
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    with fresh_database(request.param, tmp_path) as url:
        yield url


@dataclass
class Federation:
    settings: object
    registry: object
    keys: object
    address: object  # embedded.Addresses
    root: Path

    @property
    def ca_pem(self) -> bytes:
        return (self.settings.pki_dir / "ca.pem").read_bytes()

    def enroll(self, org_id: str, domains: list[str]):
        """Invite, enroll over TLS with a CSR, approve: an mTLS client and the node identity of ``org_id``."""
        from contributor_node.client import CoordinatorClient
        from contributor_node.identity import NodeIdentity
        from coordinator.enrollment import approve, invite

        token = invite(self.registry, org_id, domains)
        identity = NodeIdentity(self.root / "nodes" / org_id, org_id)
        with CoordinatorClient(self.address.enroll, ca_pem=self.ca_pem) as anonymous:
            pending = anonymous.enroll(org_id, identity.csr(), token)
            approve(self.registry, self.keys, pending.enrollment_id)
            identity.save_enrollment(anonymous.enrollment(pending.enrollment_id))
        return identity


def make_settings(root: Path, db_url: str, **overrides):
    from coordinator.settings import load_settings

    overrides = {"min_free_bytes": 0, "auto_build": False, **overrides}  # a test that wants builds asks for them
    return load_settings(
        home=root / "coordinator",
        database_url=db_url,
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        api_listen="127.0.0.1:0",
        **overrides,
    )


@pytest.fixture
def federation(micro, db_url, tmp_path):
    """An initialised coordinator publishing the micro anchor, serving in-process on free loopback ports."""
    from coordinator.embedded import running_coordinator
    from coordinator.keys import CoordinatorKeys
    from coordinator.setup import initialize
    from coordinator.state.db import Registry

    # Small chunks: the anchor's files and every package cross the wire in many pieces.
    settings = make_settings(tmp_path, db_url, sync_every_bytes=64 * 1024, chunk_bytes=64 * 1024)
    initialize(settings, micro["branch"])
    registry = Registry(settings.db_url)
    with running_coordinator(settings) as address:
        yield Federation(settings, registry, CoordinatorKeys(settings.pki_dir), address, tmp_path)
    registry.dispose()


@pytest.fixture
def uploads(db_url, tmp_path):
    """``uploads(**settings)``: (registry, Uploads) on a fresh home, closed after the test."""
    from coordinator.blobs import BlobStore
    from coordinator.state.db import Registry
    from coordinator.uploads.sessions import Uploads

    def make(**overrides):
        settings = make_settings(tmp_path, db_url, **overrides)
        settings.staging_dir.mkdir(parents=True, exist_ok=True)
        registry = Registry(settings.db_url)
        made.append((registry, Uploads(registry, settings, BlobStore(settings.blob_dir))))
        return made[-1]

    made: list = []
    yield make
    for registry, up in made:
        up.close()
        registry.dispose()


@pytest.fixture(scope="session")
def packages(micro_expert, micro_math, tmp_path_factory):
    """Unsigned-for-now expert sources: the test-vowels and math micro experts (packages are built per org)."""
    return {"test-vowels": micro_expert, "math": micro_math}


@pytest.fixture
def world(db_url, tmp_path):
    """The REST API's test world (tests/integration/api_matrix.py): an app, its registry and a token per role."""
    from .api_matrix import make_world

    world = make_world(tmp_path, db_url)
    yield world
    world.registry.dispose()
