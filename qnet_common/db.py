"""A small SQL layer over SQLite (the embedded default) and PostgreSQL (clusters), one API for both.

SQL is written once with `?` placeholders and the tokens {serial} and {float}; the dialect fills them in.
Calls are blocking: async code runs them with `asyncio.to_thread`. Each thread gets its own connection.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)

_TOKENS = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "float": "REAL"},
    "postgresql": {"serial": "BIGSERIAL PRIMARY KEY", "float": "DOUBLE PRECISION"},
}


class Tx:
    """One transaction: `execute` returns rows as dicts."""

    def __init__(self, db: Database, cursor: Any) -> None:
        self._db = db
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        self._cursor.execute(self._db.sql(sql), tuple(params))
        if self._cursor.description is None:
            return []
        names = [col[0] for col in self._cursor.description]
        return [dict(zip(names, row, strict=True)) for row in self._cursor.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.execute(sql, params)
        return rows[0] if rows else None

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class Database:
    """A connection factory for one database URL: sqlite:///path or postgresql://..."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self._path = pathlib.Path(url.removeprefix("sqlite:///"))
            self._path.parent.mkdir(parents=True, exist_ok=True)
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
        else:
            raise ValueError(f"database URL {url!r}: expected sqlite:///path or postgresql://host/db")
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def sql(self, text: str) -> str:
        text = text.format(**_TOKENS[self.dialect])
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
        else:
            import psycopg

            conn = psycopg.connect(self.url, autocommit=True)
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A read-write transaction; SQLite takes the write lock at once (BEGIN IMMEDIATE)."""
        conn = self._connection()
        if self.dialect == "sqlite":
            cursor = conn.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self, cursor)
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
        else:
            with conn.transaction(), conn.cursor() as cursor:
                yield Tx(self, cursor)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """A single statement outside an explicit transaction (autocommit)."""
        conn = self._connection()
        cursor = conn.cursor()
        try:
            return Tx(self, cursor).execute(sql, params)
        finally:
            cursor.close()

    def migrate(self, statements: Sequence[str]) -> None:
        """Creates tables and indexes idempotently; safe to run from several processes at once."""
        if self.dialect == "postgresql":
            with self.transaction() as tx:
                # Serialise concurrent migrations of replicas starting together.
                tx.execute("SELECT pg_advisory_xact_lock(7262021)")
                for statement in statements:
                    tx.execute(statement)
        else:
            with self.transaction() as tx:
                for statement in statements:
                    tx.execute(statement)

    def is_unique_violation(self, error: BaseException) -> bool:
        """True when `error` is this database's unique-constraint violation (a concurrent insert won)."""
        if self.dialect == "sqlite":
            return isinstance(error, sqlite3.IntegrityError)
        import psycopg

        return isinstance(error, psycopg.errors.UniqueViolation)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(Exception):
                    conn.close()
            self._all.clear()
        self._local = threading.local()
