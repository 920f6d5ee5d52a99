"""The gateway's WebSocket bridge process (Envoy routes /api/v2/network/stream here)."""

from __future__ import annotations

import asyncio
import signal

from prometheus_client import Gauge, start_http_server
from qnet.scheduler.v1 import job_events_service_pb2_grpc as ev_grpc
from websockets.asyncio.server import serve
from websockets.http11 import Response

from qnet_common import logs
from qnet_common.db import Database
from qnet_common.grpcclient import channel
from qnet_common.keys import ApiKeyStore
from qnet_common.settings import Settings
from services.gateway.bridge import Bridge

CONNECTIONS = Gauge("qnet_gateway_websocket_connections", "Open WebSocket connections")


def _health(connection, request) -> Response | None:  # noqa: ANN001
    if request.path == "/healthz":
        return connection.respond(200, "ok\n")
    return None


async def run(settings: Settings, stop: asyncio.Event) -> None:
    keys = ApiKeyStore(Database(settings.db_url))
    events = channel(settings.scheduler_addr, settings.service_key)
    bridge = Bridge(keys, ev_grpc.JobEventsServiceStub(events), settings.ws_max_buffer)
    bridge.fanout.start()
    CONNECTIONS.set_function(lambda: len(bridge.connections))
    metrics, _ = start_http_server(settings.metrics_port, addr=settings.host)
    async with serve(bridge.handle, settings.host, settings.grpc_port, process_request=_health,
                     ping_interval=settings.ws_ping_s, ping_timeout=settings.ws_ping_s) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"QNET_READY service=gateway http={settings.host}:{port} "
              f"metrics={settings.host}:{metrics.server_port}", flush=True)
        await stop.wait()
        server.close(close_connections=True)
        await server.wait_closed()
    await bridge.fanout.stop()
    await events.close()
    metrics.shutdown()


def main() -> None:
    settings = Settings.from_env(grpc_port=8081, metrics_port=9105)
    logs.configure("gateway", settings.log_level)

    async def amain() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop)

    asyncio.run(amain())


if __name__ == "__main__":
    main()
