"""Runs the whole qnet mesh on one machine: every service replica as its own process, plus Envoy in front.

    python -m services.mesh                 # make run: one replica of each service, fixed ports, SQLite
    python -m services.mesh --cluster       # make run-cluster: the topology an operator runs, on PostgreSQL
    python -m services.mesh --ephemeral     # every port picked by the OS (tests)

Starts the backends adapters and the aggregator, then the schedulers, the WebSocket bridges and the network
service (each learns the others' addresses; backends replicas are found through the registry), renders Envoy's
config from its one template with every replica as an endpoint, waits until every gRPC service reports SERVING
on grpc.health.v1, prints one ready line, and then supervises: a child that exits is started again on the same
ports, with backoff, while the others keep serving. On Ctrl-C or SIGTERM it stops every child in reverse start
order (so the WebSocket bridges close their clients with 1001 through Envoy) and Envoy last; none is left
behind (children also get SIGTERM if this process dies).

Both topologies run one backends adapter service per provider (ibm, ionq, rigetti, local). Cluster mode
(TOPOLOGIES["cluster"]): two schedulers, the adapter services with two replicas of the local one, one
aggregator, two WebSocket bridges and one network service, on PostgreSQL: QNET_DATABASE_URL when it names one,
else a server started from the machine's initdb with its data in $QNET_DATA_DIR/postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pathlib
import re
import secrets
import signal
import sys
import time
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qnet_common.db import Database
from qnet_common.envoy_config import render_config
from qnet_common.envoy_process import EnvoyProcess, die_with_parent
from qnet_common.keys import ApiKeyStore
from qnet_common.settings import DEFAULT_PORTS, LauncherSettings, SettingsError
from services.backends.adapters.registry import PROVIDERS, devices_of

ROOT = pathlib.Path(__file__).resolve().parent.parent
READY = re.compile(r"QNET_READY service=(\S+) (grpc|http)=(\S+) metrics=(\S+)")


@dataclass(frozen=True)
class Role:
    """One kind of process: replica i listens on port + i and metrics_port + i (fixed ports)."""

    name: str
    service: str
    port: int
    metrics_port: int
    replicas: int = 1
    env: tuple[tuple[str, str], ...] = ()

    @property
    def module(self) -> str:
        return f"services.{self.service}.main"

    def children(self) -> list[tuple[str, int, int]]:
        """(child name, port, metrics port) of each replica; a single replica is named as its role."""
        if self.replicas == 1:
            return [(self.name, self.port, self.metrics_port)]
        return [(f"{self.name}-{i + 1}", self.port + i, self.metrics_port + i) for i in range(self.replicas)]


POOL_3 = ("QNET_DB_POOL_SIZE", "3")
# Every topology runs one backends adapter service per provider (registry.PROVIDERS: the devices of one adapter
# module), so that one provider's emulations never wait for another's on one interpreter: strategy `all` runs its
# backends side by side (1.15x the slowest backend alone, against 1.63x with every device in one process).

#: make run's adapter services: ibm's on the backends' default ports (QNET_BACKENDS_ADDR's default reaches
#: it), the others on the ports after the other services'.
SINGLE_ADAPTER_PORTS = {"ibm": DEFAULT_PORTS["backends"], "ionq": (50055, 9106), "rigetti": (50056, 9107),
                        "local": (50057, 9108)}
#: Cluster mode's ports step by MAX_REPLICAS from one role to the next, so that no replica count collides.
MAX_REPLICAS = 10


def _adapter(provider: str, port: int, metrics_port: int, *env: tuple[str, str], replicas: int = 1) -> Role:
    return Role(f"backends-{provider}", "backends", port, metrics_port, replicas,
                env=(("QNET_DEVICES", ",".join(devices_of(provider))), *env))


#: Start order: adapters and aggregator first, the services that call them next, the network service last.
TOPOLOGIES = {
    "single": (*(_adapter(p, *SINGLE_ADAPTER_PORTS[p]) for p in PROVIDERS),
               *(Role(name, name, *DEFAULT_PORTS[name]) for name in ("aggregator", "scheduler", "gateway", "network"))),
    # Database connections are budgeted per role (QNET_DB_POOL_SIZE): replicas x pool size must stay under the
    # server's max_connections (100 by default) with room for operators; the schedulers need the most.
    "cluster": (
        _adapter("ibm", 50120, 9120, POOL_3),
        _adapter("ionq", 50130, 9130, POOL_3),
        _adapter("rigetti", 50140, 9140, POOL_3),
        _adapter("local", 50150, 9150, POOL_3, replicas=2),
        Role("aggregator", "aggregator", 50160, 9160, env=(POOL_3,)),
        Role("scheduler", "scheduler", 50110, 9110, replicas=2, env=(("QNET_DB_POOL_SIZE", "8"),)),
        Role("gateway", "gateway", 8180, 9180, replicas=2, env=(POOL_3,)),
        Role("network", "network", 50170, 9170, env=(("QNET_DB_POOL_SIZE", "4"),)),
    ),
}
#: Which public gRPC services Envoy routes to which service's replicas.
PUBLIC = {
    "scheduler": ("qnet.scheduler.v1.ExecutionService",),
    "aggregator": ("qnet.aggregator.v1.AggregationService",),
    "network": ("qnet.network.v1.NetworkService", "qnet.backends.v1.BackendService"),
}
#: A cluster's replicas keep serving this long after reporting NOT_SERVING (Envoy's health checks see it).
CLUSTER_DRAIN_DELAY_S = "2"
START_TIMEOUT_S = 180.0
#: Waits before restarting a child that exited (reset once it has run for STABLE_S).
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_S = 30.0


class Mesh:
    def __init__(self, settings: LauncherSettings, *, ephemeral: bool, http_port: int, admin_port: int,
                 topology: str = "single", roles: tuple[Role, ...] | None = None) -> None:
        self.settings = settings
        self.ephemeral = ephemeral
        self.http_port = http_port
        self.admin_port = admin_port
        self.topology = topology
        self.roles = roles or TOPOLOGIES[topology]
        self.children: dict[str, asyncio.subprocess.Process] = {}
        #: Child name -> its role, and the bound addresses.
        self.role_of: dict[str, Role] = {}
        self.addresses: dict[str, str] = {}
        self.metrics: dict[str, str] = {}
        self.envoy: EnvoyProcess | None = None
        self.service_key = settings.service_key or secrets.token_urlsafe(32)
        self.stopping = False

    def replicas(self, service: str) -> list[str]:
        """The bound addresses of a service's replicas, in start order."""
        return [a for name, a in self.addresses.items() if self.role_of[name].service == service]

    def _target(self, service: str) -> str:
        """A gRPC target over every replica of the service (calls spread over the healthy ones)."""
        found = self.replicas(service)
        return found[0] if len(found) == 1 else "ipv4:" + ",".join(found)

    def _env(self, role: Role, grpc_port: int, metrics_port: int, *, exact: bool = False) -> dict[str, str]:
        """`exact`: these very ports (a restart keeps the addresses Envoy and the other services know). The
        children get this process's environment, which their own settings read, with the mesh's wiring on top."""
        env = dict(os.environ)  # passed on, not read here (tests/unit/test_settings.py names this exception)
        if self.topology == "cluster":
            env.setdefault("QNET_DRAIN_DELAY_S", CLUSTER_DRAIN_DELAY_S)
        env.update(role.env)
        env.update(
            PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "gen"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            QNET_GRPC_PORT=str(0 if self.ephemeral and not exact else grpc_port),
            QNET_METRICS_PORT=str(0 if self.ephemeral and not exact else metrics_port),
            QNET_SERVICE_KEY=self.service_key,
            QNET_DATA_DIR=str(self.settings.data_dir),
            PYTHONUNBUFFERED="1",
        )
        if self.settings.database_url:
            env["QNET_DATABASE_URL"] = self.settings.database_url
        for service in ("scheduler", "aggregator"):
            if self.replicas(service):
                env[f"QNET_{service.upper()}_ADDR"] = self._target(service)
        return env

    async def _start(self, name: str, role: Role, port: int, metrics_port: int, *, exact: bool = False) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", role.module, env=self._env(role, port, metrics_port, exact=exact), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, preexec_fn=die_with_parent,
        )
        self.children[name] = process
        self.role_of[name] = role
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = await asyncio.wait_for(process.stdout.readline(), timeout=max(0.1, remaining))
            except TimeoutError:
                raise RuntimeError(f"{name} did not report ready within {START_TIMEOUT_S:.0f}s") from None
            if not line:
                raise RuntimeError(f"{name} exited with code {await process.wait()} before it was ready (see its log)")
            match = READY.search(line.decode(errors="replace"))
            if match:
                self.addresses[name] = match.group(3)
                self.metrics[name] = match.group(4)
                break
        asyncio.create_task(self._drain_stdout(process))

    @staticmethod
    async def _drain_stdout(process: asyncio.subprocess.Process) -> None:
        while await process.stdout.readline():
            pass

    async def start(self) -> str:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        for role in self.roles:  # replicas of one role start together; roles in order
            await asyncio.gather(*(self._start(name, role, port, metrics_port)
                                   for name, port, metrics_port in role.children()))
        await self._wait_serving()
        upstreams = {grpc_name: [_split(a) for a in self.replicas(service)]
                     for service, names in PUBLIC.items() for grpc_name in names}
        config = render_config(
            listen_host=self.settings.host,
            listen_port=0 if self.ephemeral else self.http_port,
            admin_port=0 if self.ephemeral else self.admin_port,
            descriptor_path=str(ROOT / "gen" / "qnet.pb"),
            upstreams=upstreams,
            stream_upstreams=[_split(a) for a in self.replicas("gateway")],
        )
        self.envoy = EnvoyProcess(config, workdir=self.settings.data_dir / "envoy")
        # Started from the main thread: the child's death signal follows the thread that forked it.
        self.envoy.start()
        return f"http://{self.settings.host}:{self.envoy.http_port}"

    async def _wait_serving(self) -> None:
        grpc_children = [name for name in self.addresses if self.role_of[name].service != "gateway"]
        await asyncio.gather(*(self._serving(name) for name in grpc_children))

    async def _serving(self, name: str) -> None:
        async with grpc.aio.insecure_channel(self.addresses[name]) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            deadline = time.monotonic() + 60
            while True:
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not report SERVING on grpc.health.v1")
                await asyncio.sleep(0.1)

    async def supervise(self) -> None:
        """Restarts any child that exits while the mesh runs; returns only when cancelled."""
        await asyncio.gather(*(self._keep_alive(name) for name in list(self.children)))

    async def _keep_alive(self, name: str) -> None:
        role = self.role_of[name]
        failures = 0
        started = time.monotonic()
        while True:
            code = await self.children[name].wait()
            if self.stopping:
                return
            if time.monotonic() - started > STABLE_S:
                failures = 0
            wait = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            print(f"qnet: {name} exited with code {code}; restarting it in {wait:.1f} s", file=sys.stderr, flush=True)
            await asyncio.sleep(wait)
            if self.stopping:
                return
            started = time.monotonic()
            failures += 1
            try:  # the same ports: Envoy and the other services keep its address
                await self._start(name, role, _split(self.addresses[name])[1], _split(self.metrics[name])[1],
                                  exact=True)
                print(f"qnet: {name} is back at {self.addresses[name]}", file=sys.stderr, flush=True)
            except RuntimeError as error:
                print(f"qnet: restarting {name} failed: {error}", file=sys.stderr, flush=True)

    async def stop(self, grace: float = 15.0) -> None:
        self.stopping = True
        # Reverse start order, Envoy last: the services drain while Envoy still carries their last replies
        # (the WebSocket bridges' 1001 close frames among them).
        for name in reversed(list(self.children)):
            process = self.children[name]
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for name in reversed(list(self.children)):
            process = self.children[name]
            try:
                await asyncio.wait_for(process.wait(), timeout=grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self.envoy is not None:
            await asyncio.to_thread(self.envoy.stop)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _replicas(text: str) -> dict[str, int]:
    found = {}
    for item in filter(None, text.split(",")):
        role, _, count = item.partition("=")
        if not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: expected ROLE=N with N >= 1")
        found[role.strip()] = int(count)
    return found


def _register_dev_key(settings: LauncherSettings) -> str:
    if not settings.dev_api_key:
        return ("no QNET_DEV_API_KEY set: create a key with `make api-key NAME=you`, "
                "or restart with QNET_DEV_API_KEY=<any secret> make run")
    ApiKeyStore(Database(settings.db_url)).ensure(settings.dev_api_key, "dev")
    return "dev key from QNET_DEV_API_KEY registered"


def _cluster_database(settings: LauncherSettings) -> tuple[LauncherSettings, object | None]:
    """Cluster mode runs on PostgreSQL: QNET_DATABASE_URL's, else one started in the data dir."""
    if settings.database_url.startswith(("postgresql://", "postgres://")):
        return settings, None
    from qnet_common.pgserver import Server

    server = Server(datadir=str((settings.data_dir / "postgres").resolve()))
    dsn = server.find_or_start(private=True)
    if dsn is None:
        raise RuntimeError("cluster mode needs PostgreSQL: set QNET_DATABASE_URL, or install Debian's postgresql"
                           " (make run-cluster does) so that a server can be started from initdb")
    print(f"qnet: cluster database: PostgreSQL at {dsn}, data in {server.datadir}", file=sys.stderr, flush=True)
    return replace(settings, database_url=dsn), server


def roles_of(topology: str, replicas: dict[str, int]) -> tuple[Role, ...]:
    """The topology's roles with some replica counts changed; ValueError names an unknown role."""
    unknown = set(replicas) - {r.name for r in TOPOLOGIES[topology]}
    if unknown:
        raise ValueError(f"--replicas: no role {', '.join(sorted(unknown))} in the {topology} topology; roles: "
                         f"{', '.join(r.name for r in TOPOLOGIES[topology])}")
    return tuple(replace(r, replicas=replicas.get(r.name, r.replicas)) for r in TOPOLOGIES[topology])


def check_fixed_ports(roles: tuple[Role, ...]) -> None:
    """ValueError naming two children that would listen on one fixed port (too many replicas of a role)."""
    owner: dict[int, str] = {}
    for role in roles:
        for child, *ports in role.children():
            for port in ports:
                if port in owner:
                    raise ValueError(f"--replicas: {child} would listen on port {port}, as {owner[port]} does; "
                                     f"cluster mode has room for {MAX_REPLICAS} replicas of a role, make run for one")
                owner[port] = child


async def amain(args: argparse.Namespace, settings: LauncherSettings) -> int:
    topology = "cluster" if args.cluster else "single"
    try:
        roles = roles_of(topology, args.replicas)
        if not args.ephemeral:
            check_fixed_ports(roles)
    except ValueError as error:
        print(f"qnet: {error}", file=sys.stderr, flush=True)
        return 2
    database = None
    if args.cluster:
        try:
            settings, database = await asyncio.to_thread(_cluster_database, settings)
        except Exception as error:
            print(f"qnet: {error}", file=sys.stderr, flush=True)
            return 1
    mesh = Mesh(settings, ephemeral=args.ephemeral, http_port=args.http_port, admin_port=args.admin_port,
                topology=topology, roles=roles)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    key_note = await asyncio.to_thread(_register_dev_key, settings)
    try:
        starting = asyncio.create_task(mesh.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            starting.cancel()
            return 0
        url = starting.result()
        services = " ".join(f"{n}={a}" for n, a in mesh.addresses.items())
        metrics = " ".join(f"{n}={a}" for n, a in mesh.metrics.items())
        print(f"QNET_MESH_READY url={url}/api/v2/network admin=http://{settings.host}:{mesh.envoy.admin_port} "
              f"{services} metrics:{metrics}", flush=True)
        print(f"qnet is ready at {url}/api/v2/network ({key_note}); Ctrl-C stops it", file=sys.stderr, flush=True)
        supervisor = asyncio.create_task(mesh.supervise())
        await stopping
        mesh.stopping = True
        supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)
        return 0
    except Exception as error:
        print(f"qnet: could not start the mesh: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        await mesh.stop()
        if database is not None:
            await asyncio.to_thread(database.stop)


def main() -> None:
    try:
        settings = LauncherSettings.from_env()
    except SettingsError as error:
        print(f"qnet: bad configuration: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    parser = argparse.ArgumentParser(prog="python -m services.mesh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ephemeral", action="store_true", help="let the OS pick every port (tests)")
    parser.add_argument("--cluster", action="store_true",
                        help="the cluster topology: replicas, one adapter service per provider, PostgreSQL")
    parser.add_argument("--replicas", type=_replicas, default={}, metavar="ROLE=N[,ROLE=N]",
                        help="replicas per role, e.g. scheduler=3,backends-local=2 (ports: role's port + i)")
    parser.add_argument("--http-port", type=int, default=settings.http_port,
                        help="Envoy's listener port (default QNET_HTTP_PORT or 8080)")
    parser.add_argument("--admin-port", type=int, default=settings.admin_port,
                        help="Envoy's admin port (default QNET_ADMIN_PORT or 9901)")
    sys.exit(asyncio.run(amain(parser.parse_args(), settings)))


if __name__ == "__main__":
    main()
