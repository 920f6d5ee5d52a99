"""Runs the whole qnet mesh on one machine: every service as its own process, plus Envoy in front.

    python -m services.mesh                 # make run: fixed ports, Envoy on 127.0.0.1:${QNET_HTTP_PORT:-8080}
    python -m services.mesh --ephemeral     # every port picked by the OS (tests)

Starts backends and aggregator, then scheduler, gateway and network (each learns the others' addresses),
renders Envoy's config from its one template, waits until every gRPC service reports SERVING on
grpc.health.v1, prints one ready line, and then supervises: a child that exits is started again on the same
ports, with backoff, while the others keep serving. On Ctrl-C or SIGTERM it stops every child, services first
(so the WebSocket bridge closes its clients with 1001 through Envoy) and Envoy last; none is left behind
(children also get SIGTERM if this process dies).
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

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qnet_common.db import Database
from qnet_common.envoy import EnvoyProcess, die_with_parent, render_config
from qnet_common.keys import ApiKeyStore
from qnet_common.settings import Settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
READY = re.compile(r"QNET_READY service=(\S+) (grpc|http)=(\S+) metrics=(\S+)")

#: (service, module, default gRPC/HTTP port, default metrics port), in start order.
SERVICES = (
    ("backends", "services.backends.main", 50052, 9102),
    ("aggregator", "services.aggregator.main", 50053, 9103),
    ("scheduler", "services.scheduler.main", 50051, 9101),
    ("gateway", "services.gateway.main", 8081, 9105),
    ("network", "services.network.main", 50054, 9104),
)
PUBLIC = {
    "backends": "qnet.backends.v1.BackendService",
    "aggregator": "qnet.aggregator.v1.AggregationService",
    "scheduler": "qnet.scheduler.v1.ExecutionService",
    "network": "qnet.network.v1.NetworkService",
}
START_TIMEOUT_S = 180.0
#: Waits before restarting a child that exited (reset once it has run for STABLE_S).
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_S = 30.0


class Mesh:
    def __init__(self, settings: Settings, *, ephemeral: bool, http_port: int, admin_port: int) -> None:
        self.settings = settings
        self.ephemeral = ephemeral
        self.http_port = http_port
        self.admin_port = admin_port
        self.children: dict[str, asyncio.subprocess.Process] = {}
        self.addresses: dict[str, str] = {}
        self.metrics: dict[str, str] = {}
        self.envoy: EnvoyProcess | None = None
        self.service_key = settings.service_key or secrets.token_urlsafe(32)
        self.stopping = False

    def _env(self, grpc_port: int, metrics_port: int, *, exact: bool = False) -> dict[str, str]:
        """`exact`: these very ports (a restart keeps the addresses Envoy and the other services know)."""
        env = dict(os.environ)
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
        for name, address in self.addresses.items():
            env[f"QNET_{name.upper()}_ADDR"] = address
        return env

    async def _start(self, name: str, module: str, port: int, metrics_port: int, *, exact: bool = False) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, env=self._env(port, metrics_port, exact=exact), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, preexec_fn=die_with_parent,
        )
        self.children[name] = process
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
        for name, module, port, metrics_port in SERVICES[:2]:
            await self._start(name, module, port, metrics_port)
        for name, module, port, metrics_port in SERVICES[2:]:
            await self._start(name, module, port, metrics_port)
        await self._wait_serving()
        upstreams = {PUBLIC[name]: _split(self.addresses[name]) for name in PUBLIC}
        config = render_config(
            listen_host=self.settings.host,
            listen_port=0 if self.ephemeral else self.http_port,
            admin_port=0 if self.ephemeral else self.admin_port,
            descriptor_path=str(ROOT / "gen" / "qnet.pb"),
            upstreams=upstreams,
            stream_upstream=_split(self.addresses["gateway"]),
        )
        self.envoy = EnvoyProcess(config, workdir=self.settings.data_dir / "envoy")
        # Started from the main thread: the child's death signal follows the thread that forked it.
        self.envoy.start()
        return f"http://{self.settings.host}:{self.envoy.http_port}"

    async def _wait_serving(self) -> None:
        for name in PUBLIC:
            async with grpc.aio.insecure_channel(self.addresses[name]) as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                deadline = time.monotonic() + 60
                while True:
                    try:
                        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.aio.AioRpcError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name} did not report SERVING on grpc.health.v1")
                    await asyncio.sleep(0.1)

    async def supervise(self) -> None:
        """Restarts any child that exits while the mesh runs; returns only when cancelled."""
        await asyncio.gather(*(self._keep_alive(name) for name in list(self.children)))

    async def _keep_alive(self, name: str) -> None:
        module = next(m for n, m, _, _ in SERVICES if n == name)
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
                await self._start(name, module, _split(self.addresses[name])[1], _split(self.metrics[name])[1],
                                  exact=True)
                print(f"qnet: {name} is back at {self.addresses[name]}", file=sys.stderr, flush=True)
            except RuntimeError as error:
                print(f"qnet: restarting {name} failed: {error}", file=sys.stderr, flush=True)

    async def stop(self, grace: float = 15.0) -> None:
        self.stopping = True
        # Reverse start order, Envoy last: the services drain while Envoy still carries their last replies
        # (the WebSocket bridge's 1001 close frames among them).
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


def _register_dev_key(settings: Settings) -> str:
    secret = os.environ.get("QNET_DEV_API_KEY", "")
    if not secret:
        return ("no QNET_DEV_API_KEY set: create a key with `make api-key NAME=you`, "
                "or restart with QNET_DEV_API_KEY=<any secret> make run")
    ApiKeyStore(Database(settings.db_url)).ensure(secret, "dev")
    return "dev key from QNET_DEV_API_KEY registered"


async def amain(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    mesh = Mesh(settings, ephemeral=args.ephemeral, http_port=args.http_port, admin_port=args.admin_port)
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.mesh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ephemeral", action="store_true", help="let the OS pick every port (tests)")
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("QNET_HTTP_PORT", "8080")))
    parser.add_argument("--admin-port", type=int, default=int(os.environ.get("QNET_ADMIN_PORT", "9901")))
    sys.exit(asyncio.run(amain(parser.parse_args())))


if __name__ == "__main__":
    main()
