"""Finds a PostgreSQL server, or starts one from the machine's initdb: for the tests (a throwaway server, a
database per test) and for `make run-cluster` (a server kept in the data dir)."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg

from qnet_common.settings import PgServerSettings

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
#: Where a kept server's data goes when run as root and the postgres user cannot reach the data dir asked for
#: (a checkout under /root, say): one folder per data dir asked for, so a run finds its data again.
STAND_IN_ROOT = "/var/lib/qnet"


def _reachable(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2):
            return True
    except Exception:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_reaches(folder: str) -> bool:
    """Whether the postgres user may enter `folder` (initdb runs as that user when we are root)."""
    os.makedirs(folder, exist_ok=True)
    return subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", folder],
                          capture_output=True).returncode == 0


class Server:
    """A PostgreSQL server: QNET_TEST_POSTGRES_DSN, else the local one, else one started from initdb."""

    def __init__(self, datadir: str | None = None, settings: PgServerSettings | None = None) -> None:
        """`datadir`: keep the started server's data there (kept across runs); else a temporary one. `settings`:
        PgServerSettings.from_env() when not given."""
        self._settings = PgServerSettings.from_env() if settings is None else settings
        self.admin_dsn: str | None = None
        self._datadir: str | None = None
        self._pg_ctl: str | None = None
        self._keep = datadir

    def find_or_start(self, *, private: bool = False) -> str | None:
        """`private`: always a throwaway server of this test's own (one it may stop and start again)."""
        for dsn in filter(None, (self._settings.test_dsn, DEFAULT_DSN,
                                 "postgresql://root@127.0.0.1:5432/test")):
            if not private and _reachable(dsn):
                self.admin_dsn = dsn
                return dsn
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not binaries or os.geteuid() == 0 and not shutil.which("runuser"):
            return None
        bindir = os.path.dirname(binaries[-1])
        if self._keep and os.geteuid() == 0 and not _postgres_reaches(os.path.dirname(os.path.abspath(self._keep))):
            digest = hashlib.sha256(os.path.abspath(self._keep).encode()).hexdigest()[:12]
            self._keep = os.path.join(STAND_IN_ROOT, f"postgres-{digest}")
        if self._keep:
            os.makedirs(self._keep, exist_ok=True)
        self._datadir = self._keep or tempfile.mkdtemp(prefix="qnet-pg-")
        port = _free_port()
        as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run it as the postgres user
            shutil.chown(self._datadir, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        if not os.path.exists(os.path.join(self._datadir, "PG_VERSION")):
            subprocess.run([*as_user, f"{bindir}/initdb", "-D", self._datadir, "-A", "trust", "-U", "postgres"],
                           check=True, capture_output=True)
        self._pg_ctl = f"{bindir}/pg_ctl"
        self._as_user = as_user
        self._port = port
        if self._keep:  # a server a killed run left behind holds the data dir: stop it first
            subprocess.run([*as_user, self._pg_ctl, "-D", self._datadir, "-m", "fast", "stop"], capture_output=True)
        self.start_again()
        self.admin_dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        while not _reachable(self.admin_dsn):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)
        return self.admin_dsn

    @contextlib.contextmanager
    def database(self):
        """A fresh, empty database for one test, dropped afterwards."""
        name = f"qnet_test_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        base = self.admin_dsn.rsplit("/", 1)[0]
        try:
            yield f"{base}/{name}"
        finally:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    @property
    def datadir(self) -> str | None:
        """The data folder of the server this object started (None for a server it found)."""
        return self._datadir

    def start_again(self) -> None:
        """Starts the server this object started (after `halt`), on the same port and data."""
        # The server's output goes to a file: a pipe it inherited would keep `run` waiting for ever.
        subprocess.run([*self._as_user, self._pg_ctl, "-D", self._datadir, "-w", "-l", f"{self._datadir}/server.log",
                        "-o", f"-p {self._port} -c listen_addresses=127.0.0.1 -k {self._datadir}", "start"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def halt(self) -> None:
        """Stops the server this object started, as an outage would (its data stays)."""
        assert self._pg_ctl and self._datadir, "only a server this test started may be stopped"
        subprocess.run([*self._as_user, self._pg_ctl, "-D", self._datadir, "-m", "immediate", "stop"],
                       check=True, capture_output=True)

    def stop(self) -> None:
        if self._pg_ctl and self._datadir:
            subprocess.run([*self._as_user, self._pg_ctl, "-D", self._datadir, "-m", "fast", "stop"],
                           capture_output=True)
            if not self._keep:
                shutil.rmtree(self._datadir, ignore_errors=True)
