"""Every public route answers 401 without a valid key; the routes come from the descriptor Envoy loads."""

from __future__ import annotations

import pathlib
import re

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]


def public_routes() -> list[tuple[str, str]]:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen" / "qnet.pb").read_bytes())
    routes = []
    for file in descriptors.file:
        if not file.package.startswith("qnet."):
            continue
        for service in file.service:
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                if verb:
                    path = re.sub(r"\{(\w+)\}", "x1", getattr(rule, verb))
                    routes.append((verb.upper(), path))
    return routes


def test_the_descriptor_has_the_specs_fourteen_endpoints():
    # 14 of the spec plus GET /execute/batch/{batch_id} for reading a batch.
    assert len(public_routes()) == 15


@pytest.mark.parametrize(("method", "path"), public_routes())
@pytest.mark.parametrize("key", [None, "qnet_not_a_key"])
def test_every_route_needs_a_valid_key(mesh, method, path, key):
    body = {} if method in ("POST", "PUT", "PATCH") else None
    reply = mesh.request(method, path.removeprefix("/api/v2/network"), body, key=key)
    assert reply.status == 401, (method, path, reply.status, reply.body)
    assert reply.body["success"] is False and set(reply.body) == {"success", "error"}
    assert reply.body["error"]["code"] == "UNAUTHENTICATED" and "key" in reply.body["error"]["message"]
