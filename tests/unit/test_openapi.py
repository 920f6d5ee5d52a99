"""The committed OpenAPI document is what the protos generate, a valid Swagger 2.0 document, and complete: every
public RPC's route, the envelope, every documented error code (qnet_common/errors.py) with its HTTP status."""

from __future__ import annotations

import copy
import importlib.util
import json
import pathlib

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from openapi_spec_validator import OpenAPIV2SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from qnet_common import errors

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "deploy" / "openapi" / "qnet.swagger.json"
DOCUMENT = json.loads(COMMITTED.read_text())


def _generator():
    spec = importlib.util.spec_from_file_location("gen_openapi", ROOT / "scripts" / "gen_openapi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _public_methods() -> list[tuple[str, str, str, str]]:
    """(service, rpc, verb, path) of every RPC with a google.api.http annotation in Envoy's descriptor set."""
    files = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen" / "qnet.pb").read_bytes())
    found = []
    for file in files.file:
        for service in file.service:
            for method in service.method:
                if method.options.HasExtension(annotations_pb2.http):
                    rule = method.options.Extensions[annotations_pb2.http]
                    verb = rule.WhichOneof("pattern")
                    found.append((service.name, method.name, verb, getattr(rule, verb)))
    return found


def _operations() -> dict[tuple[str, str], dict]:
    return {(verb, DOCUMENT["basePath"] + path): op for path, item in DOCUMENT["paths"].items()
            for verb, op in item.items()}


def test_the_committed_document_is_what_the_protos_generate():
    assert _generator().render() == COMMITTED.read_text(), "deploy/openapi/qnet.swagger.json is stale: make openapi"


def test_it_is_a_valid_swagger_2_document():
    validate(DOCUMENT, cls=OpenAPIV2SpecValidator)
    broken = copy.deepcopy(DOCUMENT)
    del broken["paths"]["/backends"]["get"]["responses"]
    with pytest.raises(OpenAPIValidationError):
        validate(broken, cls=OpenAPIV2SpecValidator)


def test_every_public_rpc_has_its_path_and_verb():
    methods = _public_methods()
    assert len(methods) == 15  # the README's fifteen REST routes
    operations = _operations()
    for service, rpc, verb, path in methods:
        operation = operations.get((verb, path))
        assert operation is not None, f"{service}.{rpc}: {verb.upper()} {path} is not in the document"
        assert operation["operationId"] == rpc and operation["tags"] == [service]
    assert len(operations) == len(methods), "the document has a route no RPC serves"
    assert DOCUMENT["basePath"] == "/api/v2/network"


def test_every_success_is_in_the_envelope():
    for (verb, path), operation in _operations().items():
        ref = operation["responses"]["200"]["schema"]["$ref"]
        envelope = DOCUMENT["definitions"][ref.removeprefix("#/definitions/")]
        assert envelope["required"] == ["data", "success"], (verb, path)
        assert envelope["properties"]["success"] == {**envelope["properties"]["success"], "type": "boolean",
                                                     "enum": [True]}
        for status, response in operation["responses"].items():
            if status != "200":
                assert response["schema"] == {"$ref": "#/definitions/ErrorEnvelope"}, (verb, path, status)


def test_the_error_envelope_and_every_documented_code_are_in_it():
    envelope = DOCUMENT["definitions"]["ErrorEnvelope"]
    assert envelope["required"] == ["success", "error"] and envelope["properties"]["success"]["enum"] == [False]
    assert DOCUMENT["definitions"]["Error"]["required"] == ["code", "message"]
    enum = set(DOCUMENT["definitions"]["ErrorCode"]["enum"])
    table = DOCUMENT["x-qnet-error-codes"]
    assert set(table) == set(errors.BY_CODE)
    for code, cls in errors.BY_CODE.items():
        assert code in enum
        assert table[code]["http_status"] == errors.HTTP_STATUS_OF_GRPC[cls.grpc_code], code
        assert table[code]["grpc_status"] == cls.grpc_code


@pytest.mark.parametrize(("verb", "path", "status", "code"), [
    ("post", "/execute", "400", "INVALID_STRATEGY"),
    ("post", "/execute", "404", "BACKEND_NOT_FOUND"),
    ("post", "/execute", "403", "QUOTA_EXCEEDED"),
    ("post", "/execute", "503", "NO_BACKENDS"),
    ("post", "/execute", "503", "ALL_BACKENDS_FAILED"),
    ("post", "/aggregate", "500", "AGGREGATION_FAILED"),
    ("post", "/aggregate", "400", "INVALID_COUNTS"),
    ("get", "/backends/{id}", "404", "BACKEND_NOT_FOUND"),
    ("get", "/execute/{job_id}", "404", "JOB_NOT_FOUND"),
    ("delete", "/execute/{job_id}", "409", "JOB_ALREADY_FINISHED"),
    ("get", "/status", "401", "UNAUTHENTICATED"),
    ("get", "/status", "503", "UNAVAILABLE"),
])
def test_each_route_names_the_codes_its_rpc_returns_under_their_status(verb, path, status, code):
    assert code in DOCUMENT["paths"][path][verb]["responses"][status]["x-qnet-codes"]


def test_the_bearer_key_is_required_everywhere():
    scheme = DOCUMENT["securityDefinitions"]["bearer"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert DOCUMENT["security"] == [{"bearer": []}]
    assert not any("security" in op for op in _operations().values())


def _schemas(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)


def test_integers_are_numbers_and_enums_are_lowercase_strings():
    for schema in _schemas(DOCUMENT["definitions"]):
        if schema.get("format") in ("int64", "uint64", "int32", "uint32"):
            assert schema["type"] == "integer", schema
    job = DOCUMENT["definitions"]["Job"]["properties"]
    assert job["status"]["enum"] == ["queued", "running", "completed", "failed", "cancelled"]
    assert "fastest" in job["strategy"]["enum"] and "all" in job["strategy"]["enum"]
    for name, definition in DOCUMENT["definitions"].items():
        for schema in _schemas(definition):
            for value in schema.get("enum", []) if name != "ErrorCode" else []:
                assert not isinstance(value, str) or value == value.lower(), (name, value)


def test_fields_envoy_always_prints_are_required_and_messages_are_not():
    job = DOCUMENT["definitions"]["Job"]
    assert {"job_id", "status", "counts", "results", "shots", "backends"} <= set(job["required"])
    assert not {"error", "selection", "created_at", "finished_at"} & set(job["required"])
    assert "required" not in DOCUMENT["definitions"]["ExecuteRequest"]  # requests take defaults


def test_the_generator_refuses_a_proto_enum_on_the_wire(tmp_path, monkeypatch):
    """Envoy prints a proto enum's upper-case name, which breaks the contract: generation must stop."""
    gen = _generator()
    protos = tmp_path / "protos"
    for source in gen.PROTOS.rglob("*.proto"):
        target = protos / source.relative_to(gen.PROTOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text())
    jobs = protos / "qnet" / "scheduler" / "v1" / "jobs.proto"
    text = jobs.read_text().replace("  string batch_id = 16;", "  Colour colour = 19;\n  string batch_id = 16;")
    jobs.write_text(text + "\nenum Colour {\n  COLOUR_UNSPECIFIED = 0;\n}\n")
    monkeypatch.setattr(gen, "PROTOS", protos)
    with pytest.raises(gen.GenerationError, match="proto enum"):
        gen.render()
