"""Settings of every qnet service, parsed once from the environment into a frozen object."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class Settings:
    """Everything a service reads from its environment. Defaults make `make run` work on one machine."""

    host: str = "127.0.0.1"
    #: gRPC port of this service; 0 picks a free one (tests).
    grpc_port: int = 0
    #: Prometheus metrics port of this service; 0 picks a free one.
    metrics_port: int = 0
    data_dir: pathlib.Path = pathlib.Path("var")
    #: sqlite:///path/to/file.db or postgresql://...; empty means SQLite in data_dir.
    database_url: str = ""
    #: The address peers reach this replica at (a pod's IP and port); empty means the bound host:port.
    advertise_addr: str = ""
    #: Shared secret the mesh's services use to call each other (never exposed through Envoy).
    service_key: str = ""
    log_level: str = "INFO"
    grace_s: float = 10.0
    aggregator_addr: str = default_address("aggregator")
    #: The scheduler and the aggregator as gRPC targets: one address, several (`ipv4:host:port,host:port`)
    #: or a DNS name (`dns:///scheduler:50051`); calls spread over the healthy ones. Backends replicas are
    #: found in the registry instead, by the devices they serve.
    scheduler_addr: str = default_address("scheduler")
    #: How long POST /execute waits for a job to finish before returning it as it stands.
    execute_wait_s: float = 30.0
    #: Device ids served by this backends process; empty means every known device.
    devices: tuple[str, ...] = ()
    #: Initial device statuses, e.g. {"rigetti_aspen": "maintenance"}.
    device_status: dict[str, str] = field(default_factory=dict)
    #: Injected device faults for resilience tests, e.g. {"ibm_brisbane": "unavailable"}.
    faults: dict[str, str] = field(default_factory=dict)
    #: Seconds a draining replica keeps serving after it reported NOT_SERVING, so that Envoy's health checks
    #: and its peers take it out of rotation before it stops taking requests (0 when it has no peers).
    drain_delay_s: float = 0.0
    #: Database connections per process (at most one per thread that uses the database).
    db_pool_size: int = 8
    #: Scheduler worker tasks per process.
    workers: int = 8
    #: Seconds a claimed job stays leased to one scheduler before another may take it over.
    lease_s: float = 30.0
    #: WebSocket bridge: seconds between pings (a client that does not answer in as long is dropped) and
    #: messages buffered per client before it is disconnected as too slow.
    ws_ping_s: float = 20.0
    ws_max_buffer: int = 1000

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'qnet.db'}"

    @classmethod
    def for_service(cls, service: str, env: Mapping[str, str] | None = None) -> Settings:
        """A service's settings, with its default ports (DEFAULT_PORTS) where the environment names none."""
        grpc_port, metrics_port = DEFAULT_PORTS[service]
        return cls.from_env(env, grpc_port=grpc_port, metrics_port=metrics_port)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **defaults: object) -> Settings:
        """Reads QNET_* variables; `defaults` are per-service defaults used when a variable is unset."""
        env = os.environ if env is None else env
        base = cls(**defaults)  # type: ignore[arg-type]
        devices = tuple(d.strip() for d in env.get("QNET_DEVICES", "").split(",") if d.strip())
        return cls(
            host=env.get("QNET_HOST", base.host),
            grpc_port=_int(env, "QNET_GRPC_PORT", base.grpc_port),
            metrics_port=_int(env, "QNET_METRICS_PORT", base.metrics_port),
            data_dir=pathlib.Path(env.get("QNET_DATA_DIR", str(base.data_dir))),
            database_url=env.get("QNET_DATABASE_URL", base.database_url),
            advertise_addr=env.get("QNET_ADVERTISE_ADDR", base.advertise_addr),
            service_key=env.get("QNET_SERVICE_KEY", base.service_key),
            log_level=env.get("QNET_LOG_LEVEL", base.log_level).upper(),
            grace_s=_float(env, "QNET_GRACE_S", base.grace_s),
            aggregator_addr=env.get("QNET_AGGREGATOR_ADDR", base.aggregator_addr),
            scheduler_addr=env.get("QNET_SCHEDULER_ADDR", base.scheduler_addr),
            execute_wait_s=_float(env, "QNET_EXECUTE_WAIT_S", base.execute_wait_s),
            devices=devices or base.devices,
            device_status=_pairs(env, "QNET_DEVICE_STATUS") or dict(base.device_status),
            faults=_pairs(env, "QNET_FAULTS") or dict(base.faults),
            drain_delay_s=_float(env, "QNET_DRAIN_DELAY_S", base.drain_delay_s),
            db_pool_size=_int(env, "QNET_DB_POOL_SIZE", base.db_pool_size, minimum=2),
            workers=_int(env, "QNET_WORKERS", base.workers, minimum=1),
            lease_s=_float(env, "QNET_LEASE_S", base.lease_s, minimum=0.1),
            ws_ping_s=_float(env, "QNET_WS_PING_S", base.ws_ping_s, minimum=0.1),
            ws_max_buffer=_int(env, "QNET_WS_MAX_BUFFER", base.ws_max_buffer, minimum=1),
        )
