"""The error model lives once, in qnet_common/errors.py: the Lua filter's tables and Envoy's local replies are
generated from it, the hand-written Lua filter holds no copy, and a long message is cut in one place."""

from __future__ import annotations

import json
import pathlib
import re

import grpc
import pytest
import yaml

from qnet_common import errors, grpcserver
from qnet_common.envoy import ENVELOPE_HEADER, MAX_MESSAGE_CHARS, TRUNCATED, bounded_message
from qnet_common.envoy_config import LOCAL_REPLIES, render_config
from qnet_common.envoy_schema import LUA, lua_filter

DESCRIPTOR = pathlib.Path(__file__).resolve().parents[2] / "gen" / "qnet.pb"
SERVICES = ["qnet.backends.v1.BackendService", "qnet.aggregator.v1.AggregationService"]


def lua_table(source: str, name: str) -> dict:
    """The generated `local NAME = { [key] = value, ... }` as a dict (keys and values are JSON literals)."""
    found = re.search(rf"^local {name} = {{\n(.*?)\n}}$", source, re.S | re.M)
    assert found, f"no table {name} in the Lua source"
    entries = re.findall(r"^  \[(.+?)\] = (.+),$", found.group(1), re.M)
    return {json.loads(key): json.loads(value) for key, value in entries}


@pytest.fixture(scope="module")
def source() -> str:
    return lua_filter(str(DESCRIPTOR), SERVICES)


def test_every_documented_code_is_in_the_lua_with_its_http_status(source):
    statuses = lua_table(source, "HTTP_STATUS")
    for code, cls in errors.BY_CODE.items():
        assert statuses.get(code) == errors.HTTP_STATUS_OF_GRPC[cls.grpc_code], code
    for name, status in errors.HTTP_STATUS_OF_GRPC.items():
        assert statuses.get(name) == status, name
    assert statuses["NO_BACKENDS"] == 503 and statuses["QUOTA_EXCEEDED"] == 403 and statuses["UPGRADE_REQUIRED"] == 426


def test_the_lua_names_grpc_codes_by_their_numbers_and_http_errors_by_errors_py(source):
    numbers = lua_table(source, "GRPC_CODES")
    assert numbers == {code.value[0]: code.name for code in grpc.StatusCode if code is not grpc.StatusCode.OK}
    by_status = lua_table(source, "CODE_OF_HTTP_STATUS")
    assert by_status == errors.CODE_OF_HTTP_STATUS
    # Shared HTTP statuses name the first gRPC status, as the hand-written table did.
    assert by_status[400] == "INVALID_ARGUMENT" and by_status[409] == "ABORTED" and by_status[500] == "INTERNAL"
    assert f'local ENVELOPE = "{ENVELOPE_HEADER}"' in source
    assert 'local OTHER_4XX_CODE, OTHER_5XX_CODE = "INVALID_ARGUMENT", "INTERNAL"' in source
    assert errors.code_of_http_status(413) == "INVALID_ARGUMENT" and errors.code_of_http_status(502) == "INTERNAL"


def test_the_tables_come_before_the_filter_that_reads_them(source):
    filter_start = source.index(LUA.read_text())
    for name in ("ENVELOPE", "GRPC_CODES", "HTTP_STATUS", "CODE_OF_HTTP_STATUS", "BODIES", "MESSAGES"):
        assert -1 < source.find(f"local {name} ") < filter_start, name


def test_the_hand_written_lua_holds_no_status_table_and_no_copied_constant():
    code = "\n".join(line for line in LUA.read_text().splitlines() if not line.lstrip().startswith("--"))
    assert not re.search(r"\[\s*\d+\s*\]\s*=", code), "a hand-written [status] = map"
    assert not re.findall(r'"[1-5]\d\d"', code), "a literal HTTP status"
    assert ENVELOPE_HEADER not in code
    for name in ("GRPC_CODES", "HTTP_STATUS", "CODE_OF_HTTP_STATUS", "ENVELOPE", "OTHER_4XX_CODE"):
        assert not re.search(rf"^\s*local {name}\b", code, re.M), name
    # The envelope's JSON is written once, in one function.
    assert code.count('{"success":false') == 1 and code.count("local function envelope(") == 1


def test_envoys_local_replies_are_the_envelope_with_errors_py_codes():
    config = yaml.safe_load(render_config(
        listen_host="127.0.0.1", listen_port=0, admin_port=0, descriptor_path=str(DESCRIPTOR),
        upstreams={"qnet.backends.v1.BackendService": [("127.0.0.1", 1)]}, stream_upstreams=[("127.0.0.1", 2)],
    ))
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    mappers = manager["local_reply_config"]["mappers"]
    assert len(mappers) == len(LOCAL_REPLIES)
    seen = []
    for mapper in mappers:
        comparison = mapper["filter"]["status_code_filter"]["comparison"]
        body = mapper["body_format_override"]["json_format"]
        assert body["success"] is False and set(body) == {"success", "error"} and set(body["error"]) == {"code",
                                                                                                           "message"}
        seen.append((comparison["op"], comparison["value"]["default_value"], body["error"]["code"]))
        if comparison["op"] == "EQ":
            assert body["error"]["code"] == errors.code_of_http_status(comparison["value"]["default_value"])
    assert seen == [("EQ", 400, "INVALID_ARGUMENT"), ("EQ", 404, "NOT_FOUND"), ("EQ", 413, "INVALID_ARGUMENT"),
                    ("EQ", 504, "DEADLINE_EXCEEDED"), ("GE", 500, "UNAVAILABLE"), ("GE", 400, "INVALID_ARGUMENT")]
    assert "retry shortly" in mappers[4]["body_format_override"]["json_format"]["error"]["message"]


def test_a_long_message_is_cut_once_to_the_limit_in_the_status_and_the_envelope():
    long = "backend ibm_a failed: " + "x" * (3 * MAX_MESSAGE_CHARS)
    status = grpcserver.error_status(errors.AllBackendsFailed(long))
    trailers = dict(status.trailing_metadata)
    envelope = json.loads(trailers[ENVELOPE_HEADER])["error"]
    assert status.code == grpc.StatusCode.UNAVAILABLE and envelope["code"] == "ALL_BACKENDS_FAILED"
    assert status.details == envelope["message"] == bounded_message(long)
    assert len(status.details) == MAX_MESSAGE_CHARS and status.details.endswith(TRUNCATED)
    assert status.details.startswith("backend ibm_a failed: xxx")
    short = grpcserver.error_status(errors.QuotaExceeded("daily quota used"))
    assert short.details == "daily quota used" == json.loads(dict(short.trailing_metadata)[ENVELOPE_HEADER])[
        "error"]["message"]
    assert bounded_message("y" * MAX_MESSAGE_CHARS) == "y" * MAX_MESSAGE_CHARS
