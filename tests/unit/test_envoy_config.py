"""The YAML fragments of Envoy's config, each from one small function, read back as YAML: what they mean."""

from __future__ import annotations

import yaml

from qnet_common import errors
from qnet_common.envoy import error_envelope
from qnet_common.envoy_config import (
    HEALTH_INTERVAL_S,
    UNHEALTHY_THRESHOLD,
    LocalReply,
    cluster,
    cluster_name,
    grpc_route,
    local_reply,
)


def test_a_grpc_route_sends_only_grpc_to_its_cluster_with_bounded_retries():
    (route,) = yaml.safe_load(grpc_route("qnet.backends.v1.BackendService", "qnet_backends_v1_BackendService", 7.5))
    assert route["match"] == {"prefix": "/qnet.backends.v1.BackendService/", "grpc": {}}
    target = route["route"]
    assert target["cluster"] == "qnet_backends_v1_BackendService" and target["timeout"] == "7.5s"
    retry = target["retry_policy"]
    assert retry["retry_on"] == "connect-failure,refused-stream" and retry["num_retries"] == 2
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    assert cluster_name("qnet.backends.v1.BackendService") == "qnet_backends_v1_BackendService"


def test_a_static_http2_cluster_lists_its_replicas_health_checked():
    (spec,) = yaml.safe_load(cluster("svc", [("127.0.0.1", 5001), ("127.0.0.2", 5002)], "grpc_health_check: {}",
                                     http2=True, dns=False))
    assert spec["name"] == "svc" and spec["type"] == "STATIC" and "dns_lookup_family" not in spec
    options = spec["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["explicit_http_config"] == {"http2_protocol_options": {}}
    (check,) = spec["health_checks"]
    assert check["grpc_health_check"] == {} and check["interval"] == f"{HEALTH_INTERVAL_S}s"
    assert check["unhealthy_threshold"] == UNHEALTHY_THRESHOLD
    assert spec["outlier_detection"]["enforcing_consecutive_5xx"] == 0
    endpoints = spec["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"] for e in endpoints] == [
        {"address": "127.0.0.1", "port_value": 5001}, {"address": "127.0.0.2", "port_value": 5002}]


def test_a_dns_http1_cluster_resolves_every_replica_of_its_name():
    (spec,) = yaml.safe_load(cluster("gateway", [("qnet-gateway.qnet.svc.cluster.local", 8081)],
                                     'http_health_check: { path: "/healthz" }', http2=False, dns=True))
    assert spec["type"] == "STRICT_DNS" and spec["dns_lookup_family"] == "V4_ONLY"
    assert "typed_extension_protocol_options" not in spec
    assert spec["health_checks"][0]["http_health_check"] == {"path": "/healthz"}


def test_a_local_reply_is_the_envelope_with_the_code_of_its_status():
    (mapper,) = yaml.safe_load(local_reply(LocalReply("EQ", 404, "no endpoint %REQ(:PATH)%: \"x\"")))
    assert mapper["filter"]["status_code_filter"]["comparison"] == {
        "op": "EQ", "value": {"default_value": 404, "runtime_key": "qnet.local_404"}}
    body = mapper["body_format_override"]["json_format"]
    assert body == {"success": False, "error": {"code": "NOT_FOUND", "message": 'no endpoint %REQ(:PATH)%: "x"'}}
    (ranged,) = yaml.safe_load(local_reply(LocalReply("GE", 500, "down", code=errors.Unavailable.code)))
    assert ranged["filter"]["status_code_filter"]["comparison"]["value"]["runtime_key"] == "qnet.local_5xx"
    assert ranged["body_format_override"]["json_format"] == yaml.safe_load(error_envelope("UNAVAILABLE", "down"))
