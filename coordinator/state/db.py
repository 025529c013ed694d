"""Database engine, sessions and migrations: SQLite by default, PostgreSQL by URL, schema via Alembic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from protocol.errors import BarFedError

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")  # an accepted row survives a crash
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection) -> None:
            # Take the write lock when a transaction starts, not at its first write: two transactions can
            # then never read the same state and both act on it (the audit chain's tail, a version number).
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def unavailable(exc: BaseException) -> BarFedError | None:
    """DATABASE_UNAVAILABLE when ``exc``, or what it was raised from, says the database cannot serve now (a refused
    or cut connection, a server shutting down, a pool with no connection to give): retrying shortly helps, unlike
    for a bug. None for anything else."""
    for _ in range(8):  # the chain of causes, bounded
        if exc is None:
            return None
        if isinstance(exc, OperationalError | PoolTimeout) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        ):
            return BarFedError(
                "DATABASE_UNAVAILABLE", "the coordinator cannot reach its database at the moment; retry shortly."
            )
        exc = exc.__cause__ or exc.__context__
    return None


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Registry:
    """Owns the engine and hands out transactional sessions."""

    def __init__(self, url: str, *, migrate_schema: bool = True) -> None:
        self.engine = make_engine(url)
        if migrate_schema:
            migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        """One trivial query on a fresh connection (readiness); the driver's error if the database is away."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1")).scalar_one()

    def dispose(self) -> None:
        self.engine.dispose()
