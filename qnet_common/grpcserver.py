"""The one gRPC server bootstrap of every service: auth, error mapping, metrics, health, reflection, drain.

`create_server(settings, component)` builds a grpc.aio server on `settings.grpc_port` (0: any free port) and
returns it with the bound port; `serve(name, build)` is each service's `main`: it parses the service's own
settings (qnet_common.settings.SETTINGS_OF), builds its component from them, starts the server and its metrics
endpoint, prints one ready line, and on SIGTERM or SIGINT drains in-flight work before exiting. The code here
reads only the common part of the settings (qnet_common.settings.Settings).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import grpc
from google.protobuf import descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from qnet.common.v1 import access_pb2

from qnet_common import errors, logs
from qnet_common.db import Database
from qnet_common.envoy import bounded_message, error_trailers
from qnet_common.keys import ApiKeyStore
from qnet_common.registry import Registry, keep_registered
from qnet_common.settings import Settings, SettingsError, for_service

log = logging.getLogger(__name__)

#: A service's own settings type (qnet_common.settings.SETTINGS_OF).
S = TypeVar("S", bound=Settings)

#: RPCs anyone may call: health checks and reflection.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

SERVING = Gauge(
    "qnet_serving", "1 while this replica reports SERVING on grpc.health.v1 (0: draining, or its database is away)",
    ["service"],
)
RPC_HANDLED = Counter(
    "qnet_grpc_server_handled_total", "RPCs completed, by method and status code", ["service", "method", "code"]
)
RPC_SECONDS = Histogram(
    "qnet_grpc_server_handling_seconds",
    "RPC handling time in seconds",
    ["service", "method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@dataclass(frozen=True)
class Caller:
    """Who is calling: an API key's id, or the mesh itself (internal calls with the service key)."""

    key_id: str
    name: str
    internal: bool = False
    shots_per_day: int | None = None
    cost_per_day: float | None = None
    admin: bool = False


#: The authenticated caller of the RPC being handled.
current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("current_caller")

#: Internal callers act on behalf of a user by sending this metadata with the service key.
ON_BEHALF_OF = "qnet-on-behalf-of"


class Authenticator:
    """One check for REST (through Envoy) and gRPC callers: `authorization: Bearer <key>`."""

    CACHE_S = 5.0

    def __init__(self, keys: ApiKeyStore, service_key: str) -> None:
        self._keys = keys
        self._service_key = service_key
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    async def authenticate(self, metadata: dict[str, str]) -> Caller:
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.Unauthenticated(
                "missing API key: send the header 'Authorization: Bearer <key>' (create a key with make api-key)"
            )
        if self._service_key and _equal(token, self._service_key):
            owner = metadata.get(ON_BEHALF_OF, "")
            return Caller(key_id=owner or "mesh", name="mesh", internal=True)
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is None or now - cached[0] > self.CACHE_S:
            key = await asyncio.to_thread(self._keys.lookup, token)
            caller = (
                None
                if key is None
                else Caller(key.key_id, key.name, shots_per_day=key.shots_per_day, cost_per_day=key.cost_per_day,
                            admin=key.admin)
            )
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now, caller)
        else:
            caller = cached[1]
        if caller is None:
            raise errors.Unauthenticated("invalid API key: check the key or create a new one with make api-key")
        return caller


def _equal(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def error_status(error: errors.QnetError) -> grpc.Status:
    """A QnetError as a google.rpc.Status with one ErrorInfo, plus the envelope trailer for Envoy."""
    code = getattr(grpc.StatusCode, error.grpc_code)
    info = error_details_pb2.ErrorInfo(reason=error.code, domain=errors.ERROR_DOMAIN, metadata=error.metadata)
    # The message travels three times in the headers (grpc-message, the details, the envelope): bounded, so a
    # long one (every backend's error, say) cannot push the response past Envoy's header limit.
    message = bounded_message(error.message)
    detail = status_pb2.Status(code=code.value[0], message=message)
    detail.details.add().Pack(info)
    status = rpc_status.to_status(detail)
    # The ready HTTP body travels as a trailer; Envoy's Lua filter makes it the response body.
    trailers = (*status.trailing_metadata, *error_trailers(error.code, message))
    return _Status(status.code, status.details, trailers)


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, Any], ...]


def declared_access(method: str) -> int:
    """The access an RPC (`/pkg.Service/Method`) declares in its proto, ACCESS_UNSPECIFIED when it declares none."""
    found = _ACCESS.get(method)
    if found is None:
        try:
            descriptor = descriptor_pool.Default().FindMethodByName(method.lstrip("/").replace("/", "."))
            found = descriptor.GetOptions().Extensions[access_pb2.access]
        except KeyError:
            found = access_pb2.ACCESS_UNSPECIFIED
        _ACCESS[method] = found
    return found


_ACCESS: dict[str, int] = {}


def authorize(method: str, access: int, caller: Caller) -> None:
    """Raises PermissionDenied unless `caller` may call an RPC declaring `access`."""
    name = method.lstrip("/").replace("/", ".")
    if access == access_pb2.ACCESS_PUBLIC:
        return
    if access == access_pb2.ACCESS_OPERATOR:
        if not (caller.internal or caller.admin):
            raise errors.PermissionDenied(f"{name} needs an operator key (keys create --admin)")
        return
    if access == access_pb2.ACCESS_INTERNAL:
        if not caller.internal:
            raise errors.PermissionDenied(f"{name} is internal to the mesh; use the public API")
        return
    raise errors.PermissionDenied(f"{name} declares no access in its proto: refused")


class QnetInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates and authorizes every RPC but health and reflection by the access its proto declares,
    maps QnetError to a Status, counts and times. A kind of handler it does not know is refused."""

    def __init__(self, service: str, authenticator: Authenticator | None) -> None:
        self._service = service
        self._auth = authenticator
        #: The wrapped handler of each method, built at its first call (a method's handler never changes), and
        #: each method's metric children: per call, only the call's own work.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._handled: dict[tuple[str, str], Any] = {}
        self._seconds: dict[str, Any] = {}

    async def intercept_service(self, continuation, details):  # grpc's own signature
        handler = await continuation(details)
        if handler is None:
            return None
        found = self._wrapped.get(details.method)
        if found is None or found[0] is not handler:
            found = self._wrapped[details.method] = (handler, self._wrap(details.method, handler))
        return found[1]

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        is_open = method.startswith(OPEN_PREFIXES) or self._auth is None
        short = method.rsplit("/", 1)[-1]
        access = access_pb2.ACCESS_PUBLIC if is_open else declared_access(method)

        async def authenticate(context: grpc.aio.ServicerContext) -> None:
            if not is_open:
                metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
                caller = await self._auth.authenticate(metadata)
                authorize(method, access, caller)
                current_caller.set(caller)

        async def fail(context: grpc.aio.ServicerContext, error: BaseException, started: float) -> None:
            if isinstance(error, errors.QnetError):
                qnet_error = error
            else:
                log.exception("unhandled error method=%s", method, exc_info=error)
                qnet_error = errors.Internal("internal error; the failure is logged under this request's time")
            status = error_status(qnet_error)
            self._record(short, status.code.name, started)
            await context.abort(status.code, status.details, status.trailing_metadata)

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                started = time.perf_counter()
                try:
                    await authenticate(context)
                    response = await inner(request, context)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as error:  # every failure becomes a documented status
                    await fail(context, error, started)
                    raise  # unreachable: abort raises
                self._record(short, "OK", started)
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def unary_stream(request, context):
                started = time.perf_counter()
                try:
                    await authenticate(context)
                    stream = inner_stream(request, context)
                    if hasattr(stream, "__aiter__"):
                        async for item in stream:
                            yield item
                    else:  # a servicer that writes with context.write (grpc.health.v1's Watch)
                        await stream
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as error:
                    await fail(context, error, started)
                self._record(short, "OK", started)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if is_open:  # health's and reflection's own streams
            return handler

        async def refuse(request_iterator, context):
            status = error_status(errors.PermissionDenied(f"{method}: client-streaming RPCs are not served"))
            await context.abort(status.code, status.details, status.trailing_metadata)

        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(refuse, handler.request_deserializer,
                                                        handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(refuse, handler.request_deserializer,
                                                     handler.response_serializer)

    def _record(self, method: str, code: str, started: float) -> None:
        handled = self._handled.get((method, code))
        if handled is None:
            handled = self._handled[(method, code)] = RPC_HANDLED.labels(self._service, method, code)
        seconds = self._seconds.get(method)
        if seconds is None:
            seconds = self._seconds[method] = RPC_SECONDS.labels(self._service, method)
        handled.inc()
        seconds.observe(time.perf_counter() - started)


class Component(Protocol):
    """What a service plugs into the bootstrap."""

    #: Full names of the gRPC services it registers (for health and reflection).
    service_names: Sequence[str]

    def register(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...


def open_keys(settings: Settings) -> ApiKeyStore:
    return ApiKeyStore(Database.shared(settings.db_url))


async def create_server(
    settings: Settings, service: str, component: Component, keys: ApiKeyStore | None
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Builds the server with the shared interceptor, health and reflection; binds settings.grpc_port."""
    authenticator = Authenticator(keys, settings.service_key) if keys is not None else None
    server = grpc.aio.server(
        interceptors=[QnetInterceptor(service, authenticator)],
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 32 * 1024 * 1024)],
    )
    component.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [*component.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    if port == 0:
        raise OSError(f"could not bind {settings.host}:{settings.grpc_port}")
    return server, port, health_servicer


async def run_service(
    service: str, component: Component, settings: Settings, keys: ApiKeyStore | None,
    stop_event: asyncio.Event,
) -> None:
    """Runs until `stop_event` is set, then drains: NOT_SERVING, stop RPCs and background work with grace."""
    server, port, health_servicer = await create_server(settings, service, component, keys)
    address = settings.advertise_addr or f"{settings.host}:{port}"
    metrics_server, _ = start_http_server(settings.metrics_port, addr=settings.host)
    metrics_port = metrics_server.server_port
    await component.start()
    await server.start()
    for name in [*component.service_names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    SERVING.labels(service).set(1)
    # The launcher reads this line to learn the bound ports.
    print(f"QNET_READY service={service} grpc={settings.host}:{port} metrics={settings.host}:{metrics_port}",
          flush=True)
    log.info("serving service=%s grpc_port=%d metrics_port=%d", service, port, metrics_port)
    background = []
    registry = instance_id = None
    if keys is not None:  # every call is authenticated against the database: serving means reaching it
        background.append(asyncio.create_task(
            _follow_database(service, health_servicer, [*component.service_names, ""], keys.db, stop_event)))
        # Peers find this replica (and the devices it serves) in the registry.
        registry = await asyncio.to_thread(Registry, keys.db)
        instance_id = Registry.new_instance_id(service)
        devices = tuple(getattr(component, "registry_devices", ()))
        background.append(asyncio.create_task(keep_registered(registry, instance_id, service, address, devices)))
    await stop_event.wait()
    log.info("draining service=%s grace_s=%.1f", service, settings.grace_s)
    for task in background:
        task.cancel()
    # Leaving: out of the registry and NOT_SERVING first, so that peers and Envoy stop sending new work.
    await health_servicer.enter_graceful_shutdown()
    SERVING.labels(service).set(0)
    if registry is not None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(registry.deregister, instance_id)
    # Still serving meanwhile: requests routed here before Envoy's health checks saw the change are answered.
    await asyncio.sleep(settings.drain_delay_s)
    await asyncio.gather(server.stop(settings.grace_s), component.stop(settings.grace_s))
    metrics_server.shutdown()
    log.info("stopped service=%s", service)


#: How often a service checks that it reaches its database (health turns NOT_SERVING while it does not).
DATABASE_CHECK_S = 1.0


async def _follow_database(service: str, health_servicer: health.aio.HealthServicer, names: list[str],
                           db: Database, stopping: asyncio.Event) -> None:
    serving = True
    while not stopping.is_set():
        reachable = await asyncio.to_thread(db.reachable)
        if reachable != serving:
            serving = reachable
            status = health_pb2.HealthCheckResponse.SERVING if reachable else health_pb2.HealthCheckResponse.NOT_SERVING
            SERVING.labels(service).set(1 if reachable else 0)  # first: whoever sees the health sees the gauge
            for name in names:
                await health_servicer.set(name, status)
            log.log(logging.INFO if reachable else logging.WARNING, "database %s: health %s",
                    "reachable again" if reachable else "unreachable", "SERVING" if reachable else "NOT_SERVING")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=DATABASE_CHECK_S)


def freeze_startup() -> int:
    """Moves every object alive now (the modules, the SDKs, what the component built at start) out of the
    garbage collector's reach, and returns how many there are.

    A full collection walks every tracked object: in a backends process, 250,000 of them from Qiskit's and
    Braket's modules, an 86 ms pause every few hundred tasks (the p99 of a 6 ms ionq_simulator run). What a
    service builds at start lives as long as the process; each service calls this once it is built."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def use_pool(loop: asyncio.AbstractEventLoop, settings: Settings) -> None:
    """Blocking calls (the database's among them) run on db_pool_size threads: each thread keeps one database
    connection, so this bounds the process's connections."""
    loop.set_default_executor(ThreadPoolExecutor(max_workers=settings.db_pool_size, thread_name_prefix="blocking"))


def bootstrap(service: str, run: Callable[[S, asyncio.Event], Awaitable[None]]) -> None:
    """The `main` of every service process, gRPC or not (the gateway): the service's own settings from the
    environment (its type from SETTINGS_OF, its default ports from DEFAULT_PORTS; a malformed value stops it
    naming the variable), logging, the blocking pool, and `run(settings, stop)` until SIGTERM/SIGINT sets `stop`."""
    try:
        settings = cast(S, for_service(service))
    except SettingsError as error:
        print(f"{service}: bad configuration: {error}", file=sys.stderr)
        sys.exit(2)
    logs.configure(service, settings.log_level)

    async def main() -> None:
        stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        use_pool(loop, settings)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_event.set)
        await run(settings, stop_event)

    asyncio.run(main())


def serve(service: str, build: Callable[[S], Awaitable[Component]]) -> None:
    """The `main` of a gRPC service: bootstrap, then its component behind the shared server until SIGTERM, then
    drain. `build` receives the service's own settings (SETTINGS_OF[service])."""

    async def run(settings: S, stop_event: asyncio.Event) -> None:
        keys = await asyncio.to_thread(open_keys, settings)
        component = await build(settings)
        freeze_startup()
        await run_service(service, component, settings, keys, stop_event)

    bootstrap(service, run)
