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
