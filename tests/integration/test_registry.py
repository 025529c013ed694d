"""The registry on SQLite and PostgreSQL: migrations match the models, the audit log is append-only and chained."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from coordinator.settings import load_settings
from coordinator.state import audit
from coordinator.state.db import Registry
from coordinator.state.models import AuditEntry, Base
from protocol.errors import BarFedError

pytestmark = pytest.mark.integration


def test_migrations_produce_exactly_the_models(db_url):
    registry = Registry(db_url)
    with registry.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    registry.dispose()
    assert diff == [], f"models and migrations disagree; add an Alembic migration: {diff}"


def test_migrating_twice_is_harmless(db_url):
    Registry(db_url).dispose()
    registry = Registry(db_url)
    with registry.session() as session:
        assert session.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0006"
    registry.dispose()


def test_audit_log_is_chained_and_append_only(db_url):
    registry = Registry(db_url)
    with registry.session() as session:
        for i in range(3):
            audit.record(session, "admin", "test.action", f"subject-{i}", n=i, nested={"ok": True})
    with registry.session() as session:
        assert audit.verify_chain(session) == 3
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(sa.exc.DBAPIError), registry.session() as session:
            session.execute(sa.text(statement))
    # A forged entry appended behind the code's back breaks the chain where it was inserted.
    with registry.session() as session:
        session.add(
            AuditEntry(actor="mallory", action="forge", subject="x", details={}, prev_hash="f" * 64, hash="e" * 64)
        )
    with registry.session() as session, pytest.raises(ValueError, match="entry 4"):
        audit.verify_chain(session)
    registry.dispose()


def test_the_chain_cannot_fork(db_url):
    """Two entries naming the same predecessor are refused by the database (prev_hash is unique)."""
    registry = Registry(db_url)
    with registry.session() as session:
        first = audit.record(session, "admin", "a", "s")
    with pytest.raises(sa.exc.IntegrityError), registry.session() as session:
        session.add(
            AuditEntry(actor="x", action="b", subject="s", details={}, prev_hash=first.prev_hash, hash="d" * 64)
        )
    registry.dispose()


def test_plaintext_is_loopback_only_and_must_be_named(tmp_path):
    assert load_settings(home=tmp_path).insecure_plaintext is False
    assert load_settings(home=tmp_path, insecure_plaintext=True).insecure_plaintext is True
    with pytest.raises(BarFedError) as err:
        load_settings(home=tmp_path, insecure_plaintext=True, listen="0.0.0.0:50051")
    assert err.value.code == "BAD_SETTINGS" and "loopback" in err.value.message
