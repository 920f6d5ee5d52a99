"""Rules of the contract in protos/ that no compiler checks: the spec's `success` envelope is on the public REST
responses and nowhere else (qnet/common/v1/access.proto says why it stays in the messages)."""

from __future__ import annotations

from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from qnet.common.v1 import access_pb2

ROOT = Path(__file__).resolve().parents[2]


def _rpcs() -> list[tuple[str, descriptor_pb2.MethodDescriptorProto, descriptor_pb2.DescriptorProto]]:
    files = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen" / "qnet.pb").read_bytes()).file
    messages = {f".{file.package}.{m.name}": m for file in files for m in file.message_type}
    return [(f"{file.package}.{service.name}/{method.name}", method, messages[method.output_type])
            for file in files if file.package.startswith("qnet.")
            for service in file.service for method in service.method if method.output_type in messages]


def test_public_rest_responses_open_with_success_and_no_other_response_carries_it():
    rpcs = _rpcs()
    assert len(rpcs) >= 20
    for name, method, output in rpcs:
        rest = method.options.HasExtension(annotations_pb2.http)
        public = method.options.Extensions[access_pb2.access] == access_pb2.ACCESS_PUBLIC
        fields = {field.name: field for field in output.field}
        if rest:
            assert public, f"{name} is on the REST edge but not ACCESS_PUBLIC"
            success = fields.get("success")
            assert success is not None and success.number == 1 and success.type == success.TYPE_BOOL, (
                f"{name}: {output.name} must open with `bool success = 1` (the spec's envelope)")
        else:
            assert "success" not in fields, f"{name} is not on the REST edge: {output.name} must not carry success"
