"""The gateway's WebSocket bridge process (Envoy routes /api/v2/network/stream here)."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import Counter, Gauge, start_http_server
from qnet.scheduler.v1 import job_events_service_pb2_grpc as ev_grpc
from websockets.asyncio.server import serve
from websockets.http11 import Response

from qnet_common.db import Database
from qnet_common.events import EventLog
from qnet_common.grpcclient import channel
from qnet_common.grpcserver import bootstrap, freeze_startup
from qnet_common.keys import ApiKeyStore
from qnet_common.registry import Registry, keep_registered
from qnet_common.settings import GatewaySettings
from services.gateway.bridge import Bridge
from services.gateway.static import StaticFiles, hook

CONNECTIONS = Gauge("qnet_gateway_websocket_connections", "Open WebSocket connections")
SLOW_CONSUMERS = Counter("qnet_gateway_slow_consumers", "Clients hung up on (4009) for falling behind their buffer")


#: Set when the bridge starts draining: /healthz answers 503 so that Envoy routes new clients elsewhere.
DRAINING = asyncio.Event()


def _health(connection, request) -> Response | None:
    if request.path == "/healthz":
        return connection.respond(503, "draining\n") if DRAINING.is_set() else connection.respond(200, "ok\n")
    return None


async def run(settings: GatewaySettings, stop: asyncio.Event) -> None:
    db = Database.shared(settings.db_url)
    keys = ApiKeyStore(db)
    registry = await asyncio.to_thread(Registry, db)
    instance_id = Registry.new_instance_id("gateway")
    events = channel(settings.scheduler_addr, settings.service_key)
    log = await asyncio.to_thread(EventLog, db)
    bridge = Bridge(keys, ev_grpc.JobEventsServiceStub(events), settings.ws_max_buffer, start_at=log.last_id,
                    on_slow=SLOW_CONSUMERS.inc)
    bridge.fanout.start()
    freeze_startup()
    CONNECTIONS.set_function(lambda: len(bridge.connections))
    metrics, _ = start_http_server(settings.metrics_port, addr=settings.host)
    # The console and the OpenAPI document (services/gateway/static.py), then /healthz, then the stream.
    process_request = hook(StaticFiles(), _health)
    # No permessage-deflate: the messages are a few hundred bytes, which it barely shrinks, and it took a tenth of
    # the bridge's samples under 500 subscribers (py-spy), with a zlib context kept per subscriber.
    async with serve(bridge.handle, settings.host, settings.grpc_port, process_request=process_request,
                     ping_interval=settings.ws_ping_s, ping_timeout=settings.ws_ping_s,
                     close_timeout=settings.grace_s, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        address = settings.advertise_addr or f"{settings.host}:{port}"
        registration = asyncio.create_task(keep_registered(registry, instance_id, "gateway", address, ()))
        print(f"QNET_READY service=gateway http={settings.host}:{port} "
              f"metrics={settings.host}:{metrics.server_port}", flush=True)
        await stop.wait()
        DRAINING.set()
        registration.cancel()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(registry.deregister, instance_id)
        await asyncio.sleep(settings.drain_delay_s)
        server.close(close_connections=True)
        await server.wait_closed()
    await bridge.fanout.stop()
    await events.close()
    metrics.shutdown()


def main() -> None:
    bootstrap("gateway", run)


if __name__ == "__main__":
    main()
