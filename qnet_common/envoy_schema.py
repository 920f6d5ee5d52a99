"""The Lua filter's source: tables generated from the descriptor set and from qnet_common/errors.py, then the
hand-written filter deploy/envoy/error_envelope.lua that reads them."""

from __future__ import annotations

import json
import pathlib
import re

from qnet_common import errors
from qnet_common.envoy import ENVELOPE_HEADER

LUA = pathlib.Path(__file__).resolve().parent.parent / "deploy" / "envoy" / "error_envelope.lua"


def lua_filter(descriptor_path: str, services: list[str]) -> str:
    """The whole Lua source Envoy runs: the generated tables, then the filter."""
    return body_schema(descriptor_path, services) + "\n" + error_tables() + "\n\n" + LUA.read_text()


def error_tables() -> str:
    """Lua tables of the error model (qnet_common/errors.py), so the filter holds no copy of it.

    ENVELOPE: the envelope trailer's name; GRPC_CODES: gRPC status number -> name (a google.rpc.Status without
    an ErrorInfo); HTTP_STATUS: every code an envelope can carry -> its HTTP status; CODE_OF_HTTP_STATUS and
    OTHER_4XX_CODE, OTHER_5XX_CODE: the code of an HTTP error that came without the envelope.
    """
    from google.rpc import code_pb2

    grpc_codes = sorted((code_pb2.Code.Value(name), name) for name in errors.HTTP_STATUS_OF_GRPC)
    lines = [f"local ENVELOPE = {_lua_string(ENVELOPE_HEADER)}"]
    lines += _lua_table("GRPC_CODES", [(str(number), _lua_string(name)) for number, name in grpc_codes])
    lines += _lua_table("HTTP_STATUS", [(_lua_string(code), str(status))
                                        for code, status in errors.http_status_of_code().items()])
    lines += _lua_table("CODE_OF_HTTP_STATUS", [(str(status), _lua_string(code))
                                                for status, code in sorted(errors.CODE_OF_HTTP_STATUS.items())])
    lines.append(f"local OTHER_4XX_CODE, OTHER_5XX_CODE = {_lua_string(errors.OTHER_4XX_CODE)}, "
                 f"{_lua_string(errors.OTHER_5XX_CODE)}")
    return "\n".join(lines)


def _lua_table(name: str, entries: list[tuple[str, str]]) -> list[str]:
    """`local NAME = {`, one `[key] = value,` line per entry, `}`; keys and values already Lua literals."""
    return [f"local {name} = {{", *(f"  [{key}] = {value}," for key, value in entries), "}"]


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

    def collect(prefix: str, types) -> None:  # repeated DescriptorProto
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
