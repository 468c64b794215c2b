"""Engine and session factory. SQLite gets WAL and a busy timeout so a training thread and the API
can write at the same time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .migrations import v1_schema

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
V1_REVISION = "0001"


_SCHEMA_LOCK = 0x5654_0001  # any constant, the same in every process
CONNECT_TIMEOUT_S = 5


class Database:
    """One engine per process; ``session()`` opens a short-lived transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_tables(self) -> None:
        """Bring the schema to the newest revision through the Alembic migrations.

        A database from before migrations existed (v1: tables but no ``alembic_version``) first gets
        the v1 columns it may lack, is stamped as revision 0001 and then upgraded like any other.
        The API and every worker do this at start; on PostgreSQL an advisory lock makes them take turns.
        """
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            tables = set(inspect(conn).get_table_names())
            if "jobs" in tables and "alembic_version" not in tables:
                _complete_v1(conn)
                command.stamp(config, V1_REVISION)
            command.upgrade(config, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self._sessions() as session:
            with session.begin():
                yield session

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A session that holds the database's write lock from its first statement, for
        read-modify-write changes (a dataset's version and class list) that must not interleave.

        SQLite only takes the write lock at a transaction's first write, so two transactions could both
        read version 5 and both write 6; ``BEGIN IMMEDIATE`` takes it at once (waiting up to the busy
        timeout). PostgreSQL gets its row locks from ``SELECT ... FOR UPDATE`` (``store.datasets.lock_dataset``)."""
        with self._sessions() as session:
            with session.begin():
                if self.engine.dialect.name == "sqlite":
                    session.connection().exec_driver_sql("BEGIN IMMEDIATE")
                yield session

    def ping(self) -> None:
        """Raise when the database cannot answer a trivial query."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        # Connections are checked before use, so a restarted database is picked up without a restart
        # here; an unreachable one fails a request within seconds (503) instead of hanging on TCP.
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith("postgresql") else {}
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def _complete_v1(conn: Connection) -> None:
    """Add the columns and indexes that early v1 databases lack (all nullable), as v1 itself did."""
    inspector = inspect(conn)
    for table in v1_schema.metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
        for index in table.indexes:
            index.create(conn, checkfirst=True)
