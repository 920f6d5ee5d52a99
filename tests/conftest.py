"""Fixtures shared by every tier: databases (SQLite and a real PostgreSQL), API keys."""

from __future__ import annotations

import pytest

from qnet_common.db import Database
from qnet_common.pgserver import Server


@pytest.fixture(scope="session")
def postgres_server():
    server = Server()
    dsn = server.find_or_start()
    if dsn is None:
        pytest.fail("no PostgreSQL server found and none could be started: `make test` installs Debian's"
                    " postgresql when initdb is missing (or set QNET_TEST_POSTGRES_DSN)")
    yield server
    server.stop()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'qnet.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """The same test against both stores."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'qnet.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        with server.database() as url:
            yield url


@pytest.fixture
def db(db_url):
    database = Database(db_url)
    yield database
    database.close()


# --- skips: CI fails on any skip whose reason the README does not explain -----------------------------------

_README = __import__("pathlib").Path(__file__).resolve().parents[1] / "README.md"
_skipped: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason.removeprefix("Skipped: ")))


def pytest_sessionfinish(session, exitstatus):
    readme = _README.read_text()
    unexplained = [(node, reason) for node, reason in _skipped if reason not in readme]
    if unexplained:
        lines = "\n".join(f"  {node}: {reason}" for node, reason in unexplained)
        print(f"\nskips the README does not explain (a skip is a failure unless it does):\n{lines}")
        session.exitstatus = 1
