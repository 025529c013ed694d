"""The embedded broker: kombu's SQLAlchemy transport on an SQLite file of its own (``home/broker.db``).

Why this one. Redelivery after ``kill -9``, measured with bench/broker_redelivery.py: neither embedded transport
gives the task back (both are kombu "virtual" transports, where a delivered, unacknowledged message lives only
in the worker's memory and returns to the queue on a clean shutdown only), and Redis not for minutes (its
restore scan runs about every 100 s after the visibility timeout). So ``acks_late`` alone survives no SIGKILL
quickly anywhere; the job row's lease and the coordinator's sweeper (coordinator.tasks.dispatch) take such a
job over, on every broker. Between the two embedded ones, from their code: the SQLAlchemy transport stores a
message in one transaction, so a consumer never sees half of one; the filesystem transport creates the message
file and then writes it, and a consumer polling in between takes an empty file. Its own file, not the
registry's: kombu takes SQLite's write lock on every poll (BEGIN IMMEDIATE, ten times a second here), which
would stall the registry's writers; its tables are no Alembic migration's; and the registry may be PostgreSQL.

The stock transport's polling interval (1 s) cannot be set through the URL (its transport options all go to
``create_engine``), and a worker's loop waits up to 2 s in ``drain_events`` before it notices a stop; this
subclass polls every 0.1 s and returns within 0.25 s, so submissions verify promptly and an embedded
coordinator stops at once. Kombu keeps every delivered message as an invisible row; ``purge_delivered``
removes them (the sweeper calls it).
"""

from __future__ import annotations

from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy import create_engine, event, text

from coordinator.settings import CoordinatorSettings

POLL_S = 0.1
DRAIN_S = 0.25


class Channel(kombu_sqla.Channel):
    def _engine_from_config(self):
        engine = create_engine(self.connection.client.hostname, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # publishers and the polling worker do not block each other
            cursor.execute("PRAGMA synchronous=NORMAL")  # a lost message is re-sent by the sweeper from the job row
            cursor.close()

        return engine


class Transport(kombu_sqla.Transport):
    Channel = Channel
    polling_interval = POLL_S

    def drain_events(self, connection, timeout=None, **kwargs):
        return super().drain_events(connection, timeout=min(timeout or DRAIN_S, DRAIN_S), **kwargs)


TRANSPORT = f"{__name__}:Transport"


def is_embedded(settings: CoordinatorSettings) -> bool:
    """No broker URL set: the coordinator's own SQLite queue file (no server, workers on this machine only)."""
    return settings.broker_url is None


def broker_url(settings: CoordinatorSettings) -> str:
    return settings.broker_url or f"sqlite:///{(settings.home / 'broker.db').resolve()}"


def purge_delivered(url: str) -> int:
    """Delete the messages kombu already handed out (it never reads them again); returns how many."""
    engine = create_engine(url, connect_args={"timeout": 30})
    try:
        with engine.begin() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kombu_message'")
            ).first()
            if exists is None:
                return 0
            return connection.execute(text("DELETE FROM kombu_message WHERE visible = 0")).rowcount
    finally:
        engine.dispose()
