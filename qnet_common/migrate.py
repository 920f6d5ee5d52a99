"""Applies every table of the shared database once (a deployment's migration Job), or waits until they exist.

    python -m qnet_common.migrate            # create every table and index (idempotent), then exit 0
    python -m qnet_common.migrate --check    # wait, read only, until every table exists (an init container)

The database is QNET_DATABASE_URL's (SQLite in QNET_DATA_DIR when unset). Both retry until --timeout seconds
have passed, so a Job or init container started before its database answers does not fail at once. Each
service still migrates its own tables when it starts (idempotent, serialised by an advisory lock on
PostgreSQL): this module lists the same SCHEMA tuples, it does not copy them.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence

from qnet_common import logs
from qnet_common.db import Database
from qnet_common.settings import MigrationSettings, SettingsError

log = logging.getLogger(__name__)

_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)", re.IGNORECASE)
#: Seconds between attempts while the database does not answer (or a table is still missing).
RETRY_S = 2.0


def schemas() -> dict[str, Sequence[str]]:
    """Every SCHEMA of the code base, by the module that owns it (no table refers to another's)."""
    from qnet_common import device_status, events, keys, registry
    from services.scheduler.adapters import job_store

    return {
        module.__name__: module.SCHEMA
        for module in (keys, registry, events, job_store, device_status)
    }


def tables() -> list[str]:
    """The names of every table the schemas create."""
    return [name for statements in schemas().values() for s in statements for name in _TABLE.findall(s)]


def apply(db: Database) -> None:
    for owner, statements in schemas().items():
        db.migrate(statements)
        log.info("schema applied owner=%s statements=%d", owner, len(statements))


def missing(db: Database) -> list[str]:
    """The tables that do not exist yet (empty: the schema is in place)."""
    absent = []
    for table in tables():
        try:
            db.query(f"SELECT 1 FROM {table} WHERE 1 = 0")  # names from our own SCHEMA text
        except Exception:  # missing table or unreachable database: both mean "not yet"
            absent.append(table)
    return absent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qnet_common.migrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only wait until every table exists (read only)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to keep retrying (default 300)")
    args = parser.parse_args(argv)
    try:
        settings = MigrationSettings.from_env()
    except SettingsError as error:
        print(f"migrate: bad configuration: {error}", file=sys.stderr)
        return 2
    logs.configure("migrate", settings.log_level)
    db = Database(settings.db_url)
    deadline = time.monotonic() + args.timeout
    try:
        while True:
            try:
                if args.check:
                    absent = missing(db)
                    if not absent:
                        log.info("schema present tables=%d", len(tables()))
                        return 0
                    problem = f"tables missing: {', '.join(absent)}"
                else:
                    apply(db)
                    return 0
            except Exception as error:  # the database is not up yet: retry until the deadline
                problem = str(error)
            if time.monotonic() >= deadline:
                print(f"migrate: gave up after {args.timeout:g} s: {problem}", file=sys.stderr)
                return 1
            log.warning("database not ready, retrying in %.0f s: %s", RETRY_S, problem)
            time.sleep(RETRY_S)
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
