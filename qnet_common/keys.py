"""API keys: created once, shown once, stored only as SHA-256 hashes. Also the `create` CLI.

    python -m qnet_common.keys create --name alice      # prints a new key
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import sys
import time
from dataclasses import dataclass

from qnet_common.db import Database
from qnet_common.settings import DatabaseSettings

KEY_PREFIX = "qnet_"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS api_keys (
        key_id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        created_at {float} NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0,
        shots_per_day INTEGER,
        cost_per_day {float},
        is_admin INTEGER NOT NULL DEFAULT 0
    )""",
)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    #: None: unlimited.
    shots_per_day: int | None = None
    cost_per_day: float | None = None
    #: Operators: may change backend statuses.
    admin: bool = False


class ApiKeyStore:
    """Creates and looks up keys in the shared database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.migrate(SCHEMA)

    @property
    def db(self) -> Database:
        return self._db

    def create(
        self, name: str, *, secret: str | None = None, shots_per_day: int | None = None,
        cost_per_day: float | None = None, admin: bool = False,
    ) -> tuple[ApiKey, str]:
        """Stores a new key (or `secret`, when given) and returns it with the secret, shown only here."""
        secret = secret or KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(f"key_{secrets.token_hex(6)}", name, shots_per_day, cost_per_day, admin)
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO api_keys (key_id, key_hash, name, created_at, shots_per_day, cost_per_day, is_admin)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key.key_id, hash_key(secret), name, time.time(), shots_per_day, cost_per_day, int(admin)),
            )
        return key, secret

    def ensure(self, secret: str, name: str) -> ApiKey:
        """Registers `secret` if it is not known yet (QNET_DEV_API_KEY); idempotent across replicas."""
        found = self.lookup(secret)
        if found is not None:
            return found
        try:
            return self.create(name, secret=secret)[0]
        except Exception:  # a replica registered it concurrently
            found = self.lookup(secret)
            if found is None:
                raise
            return found

    def lookup(self, secret: str) -> ApiKey | None:
        digest = hash_key(secret)
        rows = self._db.query(
            "SELECT key_id, key_hash, name, shots_per_day, cost_per_day, is_admin FROM api_keys"
            " WHERE key_hash = ? AND revoked = 0",
            (digest,),
        )
        if not rows or not hmac.compare_digest(rows[0]["key_hash"], digest):
            return None
        row = rows[0]
        return ApiKey(row["key_id"], row["name"], row["shots_per_day"], row["cost_per_day"], bool(row["is_admin"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qnet_common.keys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it (it is shown only once)")
    create.add_argument("--name", required=True, help="who the key is for")
    create.add_argument("--shots-per-day", type=int, default=None, help="shot budget per day (default none)")
    create.add_argument("--cost-per-day", type=float, default=None, help="cost budget per day in USD")
    create.add_argument("--admin", action="store_true", help="an operator key (may change backend statuses)")
    args = parser.parse_args(argv)
    settings = DatabaseSettings.from_env()
    store = ApiKeyStore(Database(settings.db_url))
    key, secret = store.create(
        args.name, shots_per_day=args.shots_per_day, cost_per_day=args.cost_per_day, admin=args.admin
    )
    print(secret)
    print(f"created key_id={key.key_id} name={key.name} database={settings.db_url}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
