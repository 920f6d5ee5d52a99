"""A fuzz tier through the real Envoy: requests generated from the descriptor set for every route, each field a
value of its type, an extreme, or any JSON at all; ids of any text; unknown fields. Every answer must be a
documented status with the envelope (or a success), no 5xx but the documented ones, and every service alive and
within its memory bound at the end. Bounded: EXAMPLES requests per route, loopback only."""

from __future__ import annotations

import json
import re
import urllib.parse

import psutil
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qnet_common import errors
from tests.e2e.conftest import ROOT
from tests.e2e.test_slice import BELL

EXAMPLES = 80
#: 5xx answers the API documents (a backend or aggregation outcome, not a crash).
DOCUMENTED_5XX = {"ALL_BACKENDS_FAILED", "NO_BACKENDS", "AGGREGATION_FAILED"}
#: Codes Envoy's own refusals use besides the services' (see the README's error table).
EDGE_CODES = {"NOT_FOUND", "INVALID_ARGUMENT", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
MiB = 1 << 20
RSS_BOUND = {"backends": 1536 * MiB, "envoy": 512 * MiB}
RSS_BOUND_OTHER = 384 * MiB

_FILES = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen" / "qnet.pb").read_bytes()).file
_MESSAGES: dict[str, descriptor_pb2.DescriptorProto] = {}


def _collect(prefix: str, types) -> None:
    for message in types:
        _MESSAGES[f"{prefix}.{message.name}"] = message
        _collect(f"{prefix}.{message.name}", message.nested_type)


for _file in _FILES:
    _collect(f".{_file.package}", _file.message_type)


def routes() -> list[tuple[str, str, str]]:
    """(verb, path template, body message or "") of every public route."""
    found = []
    for file in _FILES:
        if not file.package.startswith("qnet."):
            continue
        for service in file.service:
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                if verb:
                    found.append((verb.upper(), getattr(rule, verb), method.input_type if rule.body else ""))
    return found


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
F = descriptor_pb2.FieldDescriptorProto
INTEGER_RANGE = {F.TYPE_INT32: 31, F.TYPE_SINT32: 31, F.TYPE_INT64: 63, F.TYPE_UINT32: 32, F.TYPE_UINT64: 64}
WORDS = st.sampled_from([BELL, "ionq_simulator", "ibm_brisbane", "local_simulator", "all", "fastest", "median",
                         "weighted_average", "00", "11", "", "net_job_000000000000"])


def value_of(field: descriptor_pb2.FieldDescriptorProto, depth: int) -> st.SearchStrategy:
    if field.type == F.TYPE_MESSAGE:
        target = _MESSAGES.get(field.type_name)
        if target is not None and target.options.map_entry:
            return st.dictionaries(st.text(max_size=6) | WORDS, value_of(target.field[1], depth + 1), max_size=4)
        single = message_of(field.type_name, depth + 1) if target is not None and depth < 3 else ANY_JSON
    elif field.type in INTEGER_RANGE:
        bits = INTEGER_RANGE[field.type]
        low = -(2 ** bits) if field.type in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_INT64) else 0
        # Past the range too: the edge must refuse what the field cannot hold.
        single = st.integers(2 * low - 1, 2 ** (bits + 1)) | st.sampled_from([0, 1, 10, 1024, -1, 2**bits])
    elif field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        single = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, 0.5, 1.0, -1.0])
    elif field.type == F.TYPE_BOOL:
        single = st.booleans()
    else:
        single = WORDS | st.text(max_size=40)
    if field.label == F.LABEL_REPEATED:
        single = st.lists(single, max_size=5)
    return single | ANY_JSON  # sometimes a value of any type at all


def message_of(name: str, depth: int = 0) -> st.SearchStrategy:
    message = _MESSAGES[name]
    optional = {field.json_name or field.name: value_of(field, depth) for field in message.field}
    known = st.fixed_dictionaries({}, optional=optional)
    return known | st.builds(lambda d, extra: {**d, **extra}, known,
                             st.dictionaries(st.text(min_size=1, max_size=8), ANY_JSON, max_size=2))


ID = (st.sampled_from(["ionq_simulator", "net_job_000000000000", "x"]).map(urllib.parse.quote)
      | st.text(max_size=40).map(lambda t: urllib.parse.quote(t, safe=""))
      | st.binary(max_size=12).map(urllib.parse.quote_from_bytes)  # bytes that are not UTF-8 among them
      | st.integers(2000, 30_000).map(lambda n: "a" * n))


#: A valid body per route: mutating one value of it reaches the nested fields random bodies rarely do.
VALID = {
    "/api/v2/network/execute": {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 10, "strategy": "fastest"},
    "/api/v2/network/execute/batch": {"circuits": [{"qasm": BELL, "shots": 8}], "backends": ["ionq_simulator"]},
    "/api/v2/network/aggregate": {"results": [{"backend": "a", "counts": {"00": 5, "11": 5}, "fidelity": 0.9},
                                              {"backend": "b", "counts": {"00": 4, "11": 6}}], "method": "median"},
    "/api/v2/network/estimate": {"qasm": BELL, "backends": ["ibm_brisbane"], "shots": 100, "strategy": "all"},
}


def leaves(value, path=()):
    """Paths to every value inside a JSON document (containers included)."""
    yield path
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from leaves(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from leaves(inner, (*path, index))


def replaced(document, path, new):
    if not path:
        return new
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


#: Values of every JSON type and the integers just past each range.
ODD = [2**31, -(2**31) - 1, 2**63, 2**64, -1, 1.5, 1e308, "", "x" * 300, [], [1], {}, {"x": 1}, None, True]


def mutations(template: str) -> st.SearchStrategy:
    base = VALID.get(template)
    if base is None:
        return st.nothing()
    odd = ANY_JSON | st.sampled_from(ODD)
    return st.builds(lambda path, new: replaced(base, path, new), st.sampled_from(list(leaves(base))), odd)


@pytest.mark.parametrize("template", sorted(VALID))
def test_every_value_of_a_valid_body_replaced_by_every_odd_one(single_mesh, template):
    """Exhaustive where random bodies are thin: each value (and container) of a valid body, one at a time,
    replaced by each of ODD."""
    base = VALID[template]
    verb = "POST"
    for path in leaves(base):
        for new in ODD:
            body = replaced(base, path, new)
            if isinstance(body, dict) and template.endswith("/execute"):
                body["return_immediately"] = True
            reply = single_mesh.request(verb, template.removeprefix("/api/v2/network"), body, timeout=60)
            check(reply, verb, f"{template} with {path} = {new!r}"[:200])


def check(reply, verb: str, path: str) -> None:
    assert isinstance(reply.body, dict) and "_raw" not in reply.body, (verb, path, reply.status, reply.body)
    if reply.status < 400:
        assert reply.body.get("success") is True, (verb, path, reply.body)
        return
    assert reply.body.get("success") is False and set(reply.body) == {"success", "error"}, (verb, path, reply.body)
    code = reply.body["error"]["code"]
    assert code in errors.BY_CODE or code in EDGE_CODES, (verb, path, reply.status, reply.body)
    assert isinstance(reply.body["error"]["message"], str) and reply.body["error"]["message"], reply.body
    # A 429 tells the client to retry later; no REST request can be worth that (the one 429 code is internal).
    assert reply.status != 429 and code != "RESOURCE_EXHAUSTED", (verb, path, reply.status, reply.body)
    if reply.status >= 500:
        assert code in DOCUMENTED_5XX, (verb, path, reply.status, reply.body)


@pytest.mark.slow
@pytest.mark.parametrize(("verb", "template", "body_type"), routes(), ids=lambda v: str(v))
def test_generated_requests_get_documented_answers(single_mesh, verb, template, body_type):
    mesh = single_mesh
    body_strategy = (mutations(template) | message_of(body_type)) if body_type else st.none()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(ids=st.lists(ID, min_size=2, max_size=2), body=body_strategy)
    def one(ids, body) -> None:
        path = template
        for text in ids:
            path = re.sub(r"\{[^}]*\}", lambda _, text=text: text or "%20", path, count=1)
        if isinstance(body, dict) and template.endswith("/execute"):
            body["return_immediately"] = True  # a valid circuit must not hold the fuzzer for a device run
        raw = None if body is None else json.dumps(body).encode()
        reply = mesh.request(verb, path.removeprefix("/api/v2/network"), raw=raw, timeout=60)
        check(reply, verb, path)

    one()


@pytest.mark.slow
def test_after_the_fuzzing_every_service_is_alive_and_within_its_memory_bound(single_mesh):
    mesh = single_mesh
    assert mesh.process.poll() is None
    log = (mesh.data_dir / "mesh.log").read_text()
    assert "exited with code" not in log, re.findall(r"qnet: .* exited with code .*", log)
    over = {}
    for child in psutil.Process(mesh.process.pid).children(recursive=True):
        cmdline = " ".join(child.cmdline())
        name = "envoy" if "envoy" in cmdline else (re.findall(r"services\.(\w+)\.main", cmdline) or ["?"])[0]
        rss = child.memory_info().rss
        if rss >= RSS_BOUND.get(name, RSS_BOUND_OTHER):
            over[f"{name}[{child.pid}]"] = f"{rss / MiB:.0f} MiB"
    assert not over, over
    reply = mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 10})
    assert reply.status == 200 and reply.body["data"]["status"] == "completed"
