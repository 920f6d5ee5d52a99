"""A small SQL layer over SQLite (the embedded default) and PostgreSQL (clusters), one API for both.

SQL is written once with `?` placeholders and the tokens {serial} and {float}; the dialect fills them in.
Calls are blocking: async code runs them with `asyncio.to_thread`. Each thread gets its own connection.

While the database cannot be reached, every call raises errors.Unavailable (a documented, retryable 503)
within CONNECT_TIMEOUT_S or STATEMENT_TIMEOUT_S; a connection found broken is replaced on the next call, so every
service recovers by itself when the database returns.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from qnet_common import errors

log = logging.getLogger(__name__)

#: Seconds to wait for a new connection, and for one statement, before the database counts as unreachable.
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_S = 30

_TOKENS = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "float": "REAL"},
    "postgresql": {"serial": "BIGSERIAL PRIMARY KEY", "float": "DOUBLE PRECISION"},
}


class Tx:
    """One transaction: `execute` returns rows as dicts."""

    def __init__(self, db: Database, cursor: Any) -> None:
        self._db = db
        self._cursor = cursor
        self._after_commit: list[Callable[[], None]] = []

    @property
    def db(self) -> Database:
        return self._db

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Calls `callback` once this transaction has committed (never if it rolls back); once however often
        it is registered."""
        if callback not in self._after_commit:
            self._after_commit.append(callback)

    def _committed(self) -> None:
        for callback in self._after_commit:
            try:
                callback()
            except Exception:  # the commit stands whatever a callback does
                log.exception("after-commit callback failed")

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
    """A connection factory for one database URL: sqlite:///path or postgresql://...

    A service process uses one, `Database.shared(url)`: each thread keeps one connection per Database, so one
    object per process keeps its connections at most its threads (QNET_DB_POOL_SIZE).
    """

    _shared: dict[str, Database] = {}
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls, url: str) -> Database:
        """This process's Database for `url`."""
        with cls._shared_lock:
            found = cls._shared.get(url)
            if found is None:
                found = cls._shared[url] = cls(url)
            return found

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
        #: SQLite has one writer at a time. Threads of this process take turns here, in order, instead of in
        #: SQLite's busy handler, which sleeps and retries (up to 100 ms a sleep: the p99 of every write under
        #: load); other processes still meet at SQLite's lock.
        self._writer = threading.RLock() if self.dialect == "sqlite" else contextlib.nullcontext()

    def sql(self, text: str) -> str:
        text = text.format(**_TOKENS[self.dialect])
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    def _connection(self) -> Any:
        return self._checked_out()[0]

    def _checked_out(self) -> tuple[Any, bool]:
        """This thread's connection, and whether it is one used before (which an outage may have killed
        without the client knowing yet)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and not (self.dialect == "postgresql" and (conn.closed or conn.broken)):
            return conn, True
        if conn is not None:  # lost (a restart of the server, a network cut): replace it
            self._discard(conn)
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
        else:
            import psycopg

            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                   options=f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}")
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn, False

    def _discard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        self._local.conn = None

    @contextlib.contextmanager
    def _unreachable_is_unavailable(self) -> Iterator[None]:
        """Connection-level failures become errors.Unavailable; the thread's connection is dropped."""
        try:
            yield
        except errors.QnetError:
            raise
        except Exception as error:
            if not self._is_unreachable(error):
                raise
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                self._discard(conn)
            log.warning("database unreachable: %s", error)
            raise errors.Unavailable(
                "the database is unreachable or too slow right now; retry in a few seconds"
            ) from error

    def _is_unreachable(self, error: BaseException) -> bool:
        if self.dialect == "sqlite":
            return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)
        import psycopg

        return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A read-write transaction; SQLite takes the write lock at once (BEGIN IMMEDIATE)."""
        with self._unreachable_is_unavailable(), self._transaction() as tx:
            yield tx

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Tx]:
        conn, reused = self._checked_out()
        if self.dialect == "sqlite":
            cursor = conn.cursor()
            with self._writer:
                cursor.execute("BEGIN IMMEDIATE")
                tx = Tx(self, cursor)
                try:
                    yield tx
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
            tx._committed()
            return
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(conn.transaction())  # BEGIN: nothing of the caller's has run yet
        except Exception as error:
            if not (reused and self._is_unreachable(error)):
                raise
            self._discard(conn)  # killed while idle (a restart, an outage): once more on a new connection
            conn, _ = self._checked_out()
            stack.enter_context(conn.transaction())
        with stack, conn.cursor() as cursor:
            tx = Tx(self, cursor)
            yield tx
        tx._committed()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """A single statement outside an explicit transaction (autocommit)."""
        with self._unreachable_is_unavailable():
            for attempt in (1, 2):
                conn, reused = self._checked_out()
                cursor = conn.cursor()
                writes = self.dialect == "sqlite" and sql.lstrip()[:6].upper() != "SELECT"
                try:
                    with self._writer if writes else contextlib.nullcontext():
                        return Tx(self, cursor).execute(sql, params)
                except Exception as error:
                    if attempt == 2 or not (reused and self._is_unreachable(error)):
                        raise
                    self._discard(conn)  # killed while idle: once more on a new connection
                finally:
                    cursor.close()
            raise AssertionError("not reached")

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

    def reachable(self) -> bool:
        """True when a statement gets through now (health checks)."""
        try:
            self.query("SELECT 1")
        except errors.Unavailable:
            return False
        return True

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


class Listener:
    """Calls `on_notify(payload)` for every NOTIFY on `channel`, from a thread of its own (PostgreSQL only).

    Its connection is separate from the pool's, reconnects after an outage, and is best effort: readers keep a
    slow poll besides, so a notification lost while the connection was down delays them, never loses data.
    """

    RECONNECT_S = 1.0

    def __init__(self, db: Database, channel: str, on_notify: Callable[[str], None]) -> None:
        self._db = db
        self._channel = channel
        self._on_notify = on_notify
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self._db.dialect == "postgresql"

    def start(self) -> None:
        if self.active:
            self._thread = threading.Thread(target=self._run, name=f"listen-{self._channel}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        import psycopg

        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._db.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    self._on_notify("")  # (re)connected: whatever was sent meanwhile is read by a poll now
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=1.0):
                            self._on_notify(notice.payload)
            except Exception:  # an outage: reconnect shortly
                log.debug("listener on %s lost its connection", self._channel, exc_info=True)
                self._stopping.wait(self.RECONNECT_S)

    def stop(self) -> None:
        self._stopping.set()
