"""Generates the OpenAPI (Swagger 2.0) document deploy/openapi/qnet.swagger.json from the public protos (make openapi).

protoc's Swagger plugin (Debian's golang-grpc-gateway: protoc-gen-swagger, or protoc-gen-openapiv2) turns each proto
with google.api.http annotations into Swagger 2.0; this script merges the files and makes the result say what
Envoy really serves: the base path /api/v2/network, the success envelope's fields required, the error envelope
with the documented codes (qnet_common/errors.py) under their HTTP statuses, the value sets of the lowercase
string fields (from the domain), 64-bit integers as JSON numbers, and the Bearer key. `--check` compares instead
of writing (exit 1 on any difference).
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import sys
import tempfile
import tomllib

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import gen_protos  # noqa: E402 - scripts/ is not a package
from google.api import annotations_pb2  # noqa: E402 - registers the google.api.http extension before parsing

from qnet_common import errors  # noqa: E402
from services.aggregator.domain.aggregation import METHODS  # noqa: E402
from services.backends.domain.device import DEVICE_STATUSES  # noqa: E402
from services.scheduler.domain.jobs import STATUSES  # noqa: E402
from services.scheduler.domain.strategies import STRATEGIES as _STRATEGIES  # noqa: E402

STRATEGIES = tuple(_STRATEGIES)
#: The aggregator owns the list of methods.
AGGREGATION_METHODS = tuple(METHODS)

PROTOS = ROOT / "protos"
OUTPUT = ROOT / "deploy" / "openapi" / "qnet.swagger.json"
BASE_PATH = "/api/v2/network"
PLUGINS = ("swagger", "openapiv2")  # protoc-gen-<name>, tried in this order
VERBS = ("get", "put", "post", "delete", "patch")
F = descriptor_pb2.FieldDescriptorProto

#: Codes every public route may answer besides its own: no or a wrong key, a malformed request or query (Envoy's
#: edge), a dependency down, a bug, a timeout at Envoy.
COMMON_CODES = ("UNAUTHENTICATED", "INVALID_ARGUMENT", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED")

#: The lowercase strings the API prints where the proto has a string (the wire contract): (message, field) ->
#: values, taken from the domain that produces them. "" where an unset value prints as the empty string.
VALUE_SETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("qnet.scheduler.v1.Job", "status"): STATUSES,
    ("qnet.scheduler.v1.Job", "strategy"): STRATEGIES,
    ("qnet.scheduler.v1.Job", "aggregation_method"): ("", *AGGREGATION_METHODS),
    ("qnet.scheduler.v1.BackendRun", "status"): STATUSES,
    ("qnet.scheduler.v1.Batch", "status"): STATUSES,
    ("qnet.scheduler.v1.ExecuteRequest", "strategy"): STRATEGIES,
    ("qnet.scheduler.v1.ExecuteRequest", "aggregation_method"): AGGREGATION_METHODS,
    ("qnet.scheduler.v1.BatchCircuit", "strategy"): STRATEGIES,
    ("qnet.scheduler.v1.ExecuteBatchRequest", "strategy"): STRATEGIES,
    ("qnet.backends.v1.Backend", "status"): DEVICE_STATUSES,
    ("qnet.network.v1.BackendStatus", "status"): DEVICE_STATUSES,
    ("qnet.network.v1.EstimateCostRequest", "strategy"): STRATEGIES,
    ("qnet.network.v1.CostEstimate", "strategy"): STRATEGIES,
    ("qnet.aggregator.v1.AggregateRequest", "method"): AGGREGATION_METHODS,
    ("qnet.aggregator.v1.AggregationResult", "method"): AGGREGATION_METHODS,
}


class GenerationError(RuntimeError):
    """The protos or the plugin's output cannot make a document that tells the truth."""


# --- the protos ---------------------------------------------------------------------------------------------


def _includes() -> list[str]:
    """PROTOS first, then the well-known types and googleapis protos gen_protos.py uses."""
    others = [d for d in gen_protos._include_dirs() if d != gen_protos.PROTOS]
    return [f"-I{d}" for d in (PROTOS, *others)]


def descriptor_set(work: pathlib.Path) -> descriptor_pb2.FileDescriptorSet:
    """Every proto of protos/ with its imports and comments (what gen/qnet.pb holds, built afresh)."""
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    out = work / "all.pb"
    args = ["protoc", *_includes(), f"--descriptor_set_out={out}", "--include_imports", "--include_source_info"]
    if protoc.main([*args, *sources]) != 0:
        raise GenerationError("protoc could not read protos/")
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def http_rule(method: descriptor_pb2.MethodDescriptorProto) -> tuple[str, str] | None:
    """(verb, path) of the method's google.api.http annotation, or None for an internal RPC."""
    if not method.options.HasExtension(annotations_pb2.http):
        return None
    rule = method.options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    if verb not in VERBS:
        raise GenerationError(f"{method.name}: http pattern {verb!r} is not supported")
    return verb, getattr(rule, verb)


def public_files(files: descriptor_pb2.FileDescriptorSet) -> list[descriptor_pb2.FileDescriptorProto]:
    """The protos under protos/ with at least one google.api.http annotation, by name."""
    found = [
        f for f in files.file
        if f.name.startswith("qnet/") and any(http_rule(m) for s in f.service for m in s.method)
    ]
    return sorted(found, key=lambda f: f.name)


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location}


def rpc_error_codes(comment: str) -> list[str]:
    """The documented codes an RPC's comment names after "Errors:" (each RPC comment says which it returns)."""
    _, _, listed = comment.partition("Errors:")
    return sorted({word for word in re.findall(r"\b[A-Z][A-Z0-9_]+\b", listed) if word in errors.BY_CODE})


class Messages:
    """The messages of the descriptor set by full name ("qnet.scheduler.v1.Job"), nested ones included."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.by_name: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.file_of: dict[str, str] = {}
        self.imports = {f.name: list(f.dependency) for f in files.file}
        self.enum_file: dict[str, str] = {}
        for file in files.file:
            stack = [(f"{file.package}.{m.name}", m) for m in file.message_type]
            while stack:
                name, message = stack.pop()
                self.by_name[name] = message
                self.file_of[name] = file.name
                stack.extend((f"{name}.{n.name}", n) for n in message.nested_type)
                self.enum_file.update({f"{name}.{e.name}": file.name for e in message.enum_type})
            self.enum_file.update({f"{file.package}.{e.name}": file.name for e in file.enum_type})

    def visible_from(self, file_name: str) -> tuple[set[str], set[str]]:
        """Messages and enums of a file and of everything it imports, transitively."""
        seen, todo = set(), [file_name]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self.imports.get(name, []))
        return {m for m, f in self.file_of.items() if f in seen}, {e for e, f in self.enum_file.items() if f in seen}

    def reachable(self, roots: list[str]) -> set[str]:
        """The roots and every message their fields lead to (map entries excluded)."""
        seen, todo = set(), list(roots)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for field in self.by_name[name].field:
                if field.type == F.TYPE_MESSAGE:
                    todo.append(field.type_name.lstrip("."))
        return {m for m in seen if not self.by_name[m].options.map_entry}


# --- the plugin ------------------------------------------------------------------------------------------------


def plugin() -> tuple[str, str]:
    """(name, path) of protoc's Swagger plugin."""
    for name in PLUGINS:
        path = shutil.which(f"protoc-gen-{name}")
        if path:
            return name, path
    raise GenerationError(
        "protoc-gen-swagger (or protoc-gen-openapiv2) is not installed: run scripts/test_tools.sh openapi "
        "(Debian's golang-grpc-gateway)"
    )


def run_plugin(file_name: str, work: pathlib.Path) -> dict:
    """The plugin's Swagger 2.0 for one proto (one run per proto: the plugin refuses mixed packages)."""
    name, path = plugin()
    out = work / "swagger"
    out.mkdir(exist_ok=True)
    args = ["protoc", *_includes(), f"--plugin=protoc-gen-{name}={path}", f"--{name}_out={out}", file_name]
    if protoc.main(args) != 0:
        raise GenerationError(f"protoc-gen-{name} failed on {file_name}")
    generated = out / (file_name.removesuffix(".proto") + ".swagger.json")
    return json.loads(generated.read_text())


def _squash(full_name: str) -> list[str]:
    """The names the plugin may give a message: the last k package parts plus the message path, dots removed."""
    parts = full_name.split(".")
    return ["".join(parts[i:]) for i in range(len(parts))]


def _walk(node: object, visit) -> None:  # a callable on every dict
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)


# --- the document ---------------------------------------------------------------------------------------------


def error_definitions() -> dict:
    codes = sorted(set(errors.BY_CODE) | set(errors.HTTP_STATUS_OF_GRPC))
    return {
        "ErrorEnvelope": {
            "type": "object",
            "description": "Every error; its code and HTTP status as in x-qnet-error-codes.",
            "required": ["success", "error"],
            "properties": {
                "success": {"type": "boolean", "enum": [False], "description": "Always false."},
                "error": {"$ref": "#/definitions/Error"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"$ref": "#/definitions/ErrorCode"},
                "message": {"type": "string", "description": "What went wrong and what to change."},
            },
        },
        "ErrorCode": {
            "type": "string",
            "description": (
                "A documented code (qnet_common/errors.py; its HTTP status in x-qnet-error-codes), or, for a failure "
                "outside qnet's services (Envoy's own replies, a timeout), the canonical gRPC status name."
            ),
            "enum": codes,
        },
    }


def error_codes_table() -> dict:
    """x-qnet-error-codes: every documented code with its HTTP status and gRPC status."""
    table = {}
    for code, cls in sorted(errors.BY_CODE.items()):
        table[code] = {"http_status": errors.HTTP_STATUS_OF_GRPC[cls.grpc_code], "grpc_status": cls.grpc_code}
        doc = (cls.__doc__ or "").strip()
        if doc and cls.__doc__ != errors.QnetError.__doc__:
            table[code]["description"] = " ".join(doc.split())
    return table


def _http_status(code: str) -> int:
    grpc_code = errors.BY_CODE[code].grpc_code if code in errors.BY_CODE else code
    return errors.HTTP_STATUS_OF_GRPC[grpc_code]


def error_responses(codes: list[str]) -> dict:
    """Per HTTP status, the envelope and the codes the RPC's comment names for it (x-qnet-codes); the schema is
    the envelope with any documented code, because a route may meet a code its comment does not name (a backend
    refusing an instruction, a dependency away)."""
    by_status: dict[int, list[str]] = {}
    for code in sorted({*codes, *COMMON_CODES}):
        by_status.setdefault(_http_status(code), []).append(code)
    envelope = {"$ref": "#/definitions/ErrorEnvelope"}
    responses: dict[str, dict] = {"default": {"description": "An error in the envelope.", "schema": envelope}}
    for status, listed in sorted(by_status.items()):
        responses[str(status)] = {
            "description": "Error envelope; error.code is " + ", ".join(listed) + ".",
            "schema": envelope,
            "x-qnet-codes": listed,
        }
    return responses


def _tidy_schema(schema: dict) -> None:
    if schema.get("type") == "boolean" and schema.get("format") == "boolean":
        del schema["format"]  # not a Swagger format
    if schema.get("type") == "string" and schema.get("format") in ("int64", "uint64"):
        schema["type"] = "integer"  # proto3 JSON prints them as strings; qnet prints numbers


def build(work: pathlib.Path) -> dict:
    files = descriptor_set(work)
    messages = Messages(files)
    public = public_files(files)
    if not public:
        raise GenerationError("no proto carries a google.api.http annotation")

    paths: dict[str, dict] = {}
    definitions: dict[str, dict] = {}
    outputs: list[str] = []
    roots: list[str] = []  # every public route's request and response
    tags = []
    codes_of: dict[str, list[str]] = {}
    for file in public:
        comments = _comments(file)
        for s_index, service in enumerate(file.service):
            tags.append({"name": service.name, "description": comments.get((6, s_index), "")})
            for m_index, method in enumerate(service.method):
                if http_rule(method):
                    codes_of[method.name] = rpc_error_codes(comments.get((6, s_index, 2, m_index), ""))
                    outputs.append(method.output_type.lstrip("."))
                    roots.extend((method.input_type.lstrip("."), method.output_type.lstrip(".")))

        generated = run_plugin(file.name, work)
        visible, enums = messages.visible_from(file.name)
        renames = {}
        for plugin_name in generated.get("definitions", {}):
            enum = [e for e in enums if plugin_name in _squash(e)]
            if enum:
                raise GenerationError(
                    f"{enum[0]} is a proto enum in a response or request: Envoy would print its upper-case names, "
                    "and the wire contract is lowercase strings; model it as a string with its values in VALUE_SETS"
                )
            matches = [m for m in visible if plugin_name in _squash(m)]
            if len(matches) != 1:
                raise GenerationError(f"{file.name}: definition {plugin_name} matches {matches or 'no message'}")
            renames[plugin_name] = matches[0]

        def rename_ref(node: dict, renames: dict = renames) -> None:
            ref = node.get("$ref", "")
            if ref.startswith("#/definitions/"):
                node["$ref"] = "#/definitions/" + renames[ref.removeprefix("#/definitions/")]

        _walk(generated, rename_ref)
        for plugin_name, schema in generated.get("definitions", {}).items():
            full = renames[plugin_name]
            if full in definitions and definitions[full] != schema:
                raise GenerationError(f"{full} is described differently by two protos")
            definitions[full] = schema
        for path, item in generated.get("paths", {}).items():
            if not path.startswith(BASE_PATH + "/"):
                raise GenerationError(f"{path} is outside {BASE_PATH}")
            route = paths.setdefault(path.removeprefix(BASE_PATH), {})
            for verb, operation in item.items():
                if verb in route:
                    raise GenerationError(f"{verb.upper()} {path} is bound twice")
                route[verb] = operation

    # Only what a public route carries: the plugin also describes a file's internal messages (PlanJob's).
    public_messages = messages.reachable(roots)
    definitions = {full: schema for full, schema in definitions.items() if full in public_messages}
    # Short names: the message's own name where it is unique among the documented messages.
    short = {}
    for full in definitions:
        name = full.rsplit(".", 1)[-1]
        short[full] = name if sum(f.rsplit(".", 1)[-1] == name for f in definitions) == 1 else full
    if set(short.values()) & set(error_definitions()):
        raise GenerationError("a message is named like an error definition")

    response_side = messages.reachable(outputs)
    for full, schema in definitions.items():
        message = messages.by_name[full]
        properties = schema.get("properties", {})
        required = []
        for field in message.field:
            values = VALUE_SETS.get((full, field.name))
            if values is not None:
                properties[field.name]["enum"] = list(values)
            singular_message = field.type == F.TYPE_MESSAGE and field.label != F.LABEL_REPEATED
            has_presence = field.proto3_optional or field.HasField("oneof_index")
            # Envoy prints every field without presence (always_print_primitive_fields): they are always there.
            if full in response_side and not singular_message and not has_presence:
                required.append(field.name)
        if full in outputs:
            properties["success"]["enum"] = [True]
            required.append("data")
        if required:
            schema["required"] = sorted(set(required))

    missing = {k for k in VALUE_SETS if k[0] not in definitions}
    if missing:
        raise GenerationError(f"VALUE_SETS names messages the document does not have: {sorted(missing)}")

    for route in paths.values():
        for operation in route.values():
            operation["responses"].update(error_responses(codes_of[operation["operationId"]]))

    document = {
        "swagger": "2.0",
        "info": {
            "title": "qnet network API",
            "version": tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"],
            "description": (
                "The REST API of the qnet quantum network, generated from protos/ (google.api.http annotations) by "
                "scripts/gen_openapi.py (make openapi). Every success is {\"success\": true, \"data\": ...}; every "
                "error is {\"success\": false, \"error\": {\"code\": ..., \"message\": ...}} with the HTTP status "
                "of its code (x-qnet-error-codes). Field names are snake_case, zero and false fields are printed, "
                "integers are JSON numbers."
            ),
        },
        "basePath": BASE_PATH,
        "schemes": ["http", "https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {
            "bearer": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "An API key as 'Authorization: Bearer <key>' (make api-key).",
            }
        },
        "security": [{"bearer": []}],
        "tags": sorted(tags, key=lambda t: t["name"]),
        "paths": paths,
        "definitions": {**{short[f]: s for f, s in definitions.items()}, **error_definitions()},
        "x-qnet-error-codes": error_codes_table(),
    }

    def finish(node: dict) -> None:
        ref = node.get("$ref", "")
        if ref.startswith("#/definitions/") and ref.removeprefix("#/definitions/") in short:
            node["$ref"] = "#/definitions/" + short[ref.removeprefix("#/definitions/")]
        _tidy_schema(node)

    _walk(document, finish)
    return document


def render() -> str:
    """The document as committed: sorted keys, two-space indent, one trailing newline."""
    with tempfile.TemporaryDirectory() as tmp:
        return json.dumps(build(pathlib.Path(tmp)), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    try:
        text = render()
    except GenerationError as error:
        print(f"gen_openapi: {error}", file=sys.stderr)
        return 1
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run make openapi", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
