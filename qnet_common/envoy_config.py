"""Envoy's config for the mesh, rendered from the one template deploy/envoy/envoy.yaml.tmpl (string.Template).

Each YAML fragment the template takes (a cluster, a gRPC route, a local reply) is made by one small function;
the Lua filter's source comes from qnet_common/envoy_schema.py.
"""

from __future__ import annotations

import pathlib
import string
from dataclasses import dataclass

from qnet_common import errors
from qnet_common.envoy import EDGE_HEADER, error_envelope
from qnet_common.envoy_schema import lua_filter

TEMPLATE = pathlib.Path(__file__).resolve().parent.parent / "deploy" / "envoy" / "envoy.yaml.tmpl"
#: Long enough for POST /execute, which waits for the job (QNET_EXECUTE_WAIT_S) before answering.
GRPC_ROUTE_TIMEOUT_S = 120
#: Active health checks: a replica reporting NOT_SERVING (draining, or cut off from its database) is out of
#: rotation within HEALTH_INTERVAL_S * UNHEALTHY_THRESHOLD; services wait QNET_DRAIN_DELAY_S, longer than that,
#: before they stop taking requests. When every replica of a cluster is unhealthy, Envoy routes to them all
#: anyway (panic mode): the services then answer the documented 503 themselves.
HEALTH_INTERVAL_S = 0.5
UNHEALTHY_THRESHOLD = 2
#: Indentation of the fragments in the template: routes, local-reply mappers, clusters, the Lua source.
ROUTE_INDENT, MAPPER_INDENT, LUA_INDENT = 14, 12, 18


@dataclass(frozen=True)
class LocalReply:
    """Envoy's own replies whose HTTP status is (`op` EQ) or is at least (GE) `status`, in the envelope.

    The code is the one errors.py gives the status (code_of_http_status) unless `code` names another.
    """

    op: str
    status: int
    message: str
    code: str = ""

    @property
    def envelope_code(self) -> str:
        return self.code or errors.code_of_http_status(self.status)


#: Envoy's own replies (malformed JSON, unknown fields, no route, unreachable service); the first that matches
#: wins. `%...%` are Envoy's substitutions.
LOCAL_REPLIES = (
    LocalReply("EQ", 400, "invalid request body or parameters (send valid JSON with the documented field types):"
                          " %LOCAL_REPLY_BODY%"),
    LocalReply("EQ", 404, "no endpoint %REQ(:METHOD)% %REQ(:PATH)%: %LOCAL_REPLY_BODY%"),
    LocalReply("EQ", 413, "request body too large (the limit is 1 MiB): send a smaller request"),
    LocalReply("EQ", 504, "the service did not answer in time: %LOCAL_REPLY_BODY%; retry, or use return_immediately"
                          " and poll the job"),
    # Envoy's own 5xx: no healthy replica, a refused or reset connection; all worth a retry.
    LocalReply("GE", 500, "service unavailable: %LOCAL_REPLY_BODY%; retry shortly", code=errors.Unavailable.code),
    LocalReply("GE", 400, "request refused (HTTP %RESPONSE_CODE%): %LOCAL_REPLY_BODY%"),
)


def _indent(text: str, spaces: int) -> str:
    return "\n".join((" " * spaces + line).rstrip() for line in text.splitlines())


def cluster_name(service: str) -> str:
    """`qnet.backends.v1.BackendService` -> `qnet_backends_v1_BackendService`."""
    return service.replace(".", "_")


def local_reply(reply: LocalReply) -> str:
    """One local_reply_config mapper: the reply's body becomes the envelope (errors.py's code for its status)."""
    scope = str(reply.status) if reply.op == "EQ" else f"{reply.status // 100}xx"
    return "\n".join([
        "- filter:",
        "    status_code_filter:",
        f"      comparison: {{ op: {reply.op}, value: {{ default_value: {reply.status},"
        f" runtime_key: qnet.local_{scope} }} }}",
        "  body_format_override:",
        f"    json_format: {error_envelope(reply.envelope_code, reply.message)}",
    ])


def grpc_route(service: str, cluster: str, timeout_s: float) -> str:
    """The route of one gRPC service's requests, native or transcoded, to its cluster.

    Transcoded requests are routed again on their gRPC path (the transcoder clears the route cache); `grpc: {}`
    keeps plain HTTP to that path out (it gets the 404 envelope). A request that never reached a replica
    (refused connection or stream) is tried once more on another.
    """
    return (
        f'- match: {{ prefix: "/{service}/", grpc: {{}} }}\n'
        f"  route: {{ cluster: {cluster}, timeout: {timeout_s:g}s, retry_policy: {{"
        ' retry_on: "connect-failure,refused-stream", num_retries: 2,'
        ' retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts, typed_config: {'
        ' "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate'
        " } }] } }"
    )


def cluster(name: str, endpoints: list[tuple[str, int]], health_check: str, *, http2: bool, dns: bool) -> str:
    """One upstream cluster: its replicas (host, port), health-checked with `health_check`, at 2-space indent."""
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
        name = cluster_name(service)
        routes.append(grpc_route(service, name, route_timeout_s))
        clusters.append(cluster(name, endpoints, "grpc_health_check: {}", http2=True, dns=dns))
    clusters.append(cluster("gateway", stream_upstreams, 'http_health_check: { path: "/healthz" }', http2=False,
                            dns=dns))
    return string.Template(TEMPLATE.read_text()).substitute(
        listen_host=listen_host,
        listen_port=listen_port,
        admin_port=admin_port,
        descriptor_path=descriptor_path,
        services=", ".join(sorted(upstreams)),
        grpc_routes=_indent("\n".join(routes), ROUTE_INDENT),
        local_replies=_indent("\n".join(local_reply(reply) for reply in LOCAL_REPLIES), MAPPER_INDENT),
        clusters="\n".join(clusters),
        lua_source=_indent(lua_filter(descriptor_path, list(upstreams)), LUA_INDENT),
        edge_header=EDGE_HEADER,
    )
