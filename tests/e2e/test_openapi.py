"""The OpenAPI document (deploy/openapi/qnet.swagger.json) against what Envoy really answers: every GET route, the
main POSTs and the errors are validated against the document's response schemas, with undocumented fields refused."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest

from tests.e2e.conftest import ROOT
from tests.e2e.test_slice import BELL

DOCUMENT = json.loads((ROOT / "deploy" / "openapi" / "qnet.swagger.json").read_text())


def _strict(definitions: dict) -> dict:
    """The definitions with additionalProperties false on every object with named fields: a field the API prints
    and the document does not describe fails validation (the document itself stays open for clients)."""
    strict = copy.deepcopy(definitions)
    for schema in strict.values():
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
    return strict


STRICT_DEFINITIONS = _strict(DOCUMENT["definitions"])


def response_schema(method: str, template: str, status: int) -> dict:
    """The document's schema for this answer; the status must be documented for the route."""
    responses = DOCUMENT["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {template} answered {status}; documented: {sorted(responses)}"
    return {**responses[str(status)]["schema"], "definitions": STRICT_DEFINITIONS}


def validate(reply, method: str, template: str) -> dict:  # the conftest's Reply
    jsonschema.Draft4Validator(response_schema(method, template, reply.status)).validate(reply.body)
    return reply.body


def path_of(template: str, **values: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


@pytest.fixture(scope="module")
def submitted(single_mesh) -> dict:
    """A completed job and a batch, for the routes that read them."""
    job = single_mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 100})
    batch = single_mesh.request("POST", "/execute/batch", {"circuits": [{"qasm": BELL}], "shots": 50,
                                                           "backends": ["ionq_simulator"]})
    assert job.status == 200 and batch.status == 200, (job.body, batch.body)
    validate(job, "POST", "/execute")
    validate(batch, "POST", "/execute/batch")
    return {"id": "ibm_brisbane", "job_id": job.body["data"]["job_id"], "batch_id": batch.body["data"]["batch_id"]}


GET_ROUTES = sorted(template for template, item in DOCUMENT["paths"].items() if "get" in item)


def test_the_document_lists_every_get_route_of_the_readme():
    assert {"/backends", "/backends/{id}", "/backends/{id}/calibration", "/backends/{id}/queue", "/status",
            "/metrics", "/topology", "/aggregate/methods", "/execute/{job_id}",
            "/execute/batch/{batch_id}"} == set(GET_ROUTES)


@pytest.mark.parametrize("template", GET_ROUTES)
def test_every_get_route_answers_as_documented(single_mesh, submitted, template):
    reply = single_mesh.request("GET", path_of(template, **submitted))
    assert reply.status == 200, reply.body
    body = validate(reply, "GET", template)
    assert body["success"] is True


def test_a_completed_execution_matches_the_document(single_mesh):
    reply = single_mesh.request("POST", "/execute", {
        "qasm": BELL, "backends": ["ionq_simulator", "ibm_brisbane"], "strategy": "all", "aggregate": True,
        "shots": 200})
    assert reply.status == 200, reply.body
    job = validate(reply, "POST", "/execute")["data"]
    assert job["status"] == "completed" and sum(job["aggregated_counts"].values()) == 200
    # Integers are JSON numbers, as the document says.
    assert isinstance(job["shots"], int) and isinstance(job["results"][0]["counts"]["00"], int)


def test_an_estimate_matches_the_document(single_mesh):
    reply = single_mesh.request("POST", "/estimate", {"qasm": BELL, "shots": 1000,
                                                      "backends": ["ibm_brisbane", "rigetti_aspen"]})
    assert reply.status == 200, reply.body
    assert validate(reply, "POST", "/estimate")["data"]["strategy"] == "cost_optimized"


def test_an_aggregation_matches_the_document(single_mesh):
    reply = single_mesh.request("POST", "/aggregate", {"method": "majority_vote", "results": [
        {"backend": "a", "counts": {"00": 60, "11": 40}}, {"backend": "b", "counts": {"00": 55, "11": 45}}]})
    assert reply.status == 200, reply.body
    assert validate(reply, "POST", "/aggregate")["data"]["method"] == "majority_vote"


@pytest.mark.parametrize(("method", "template", "values", "body", "key", "status", "code"), [
    ("GET", "/backends", {}, None, None, 401, "UNAUTHENTICATED"),
    ("GET", "/backends/{id}", {"id": "no_such_backend"}, None, "dev", 404, "BACKEND_NOT_FOUND"),
    ("POST", "/execute", {}, {"qasm": BELL, "strategy": "quickest"}, "dev", 400, "INVALID_STRATEGY"),
])
def test_errors_match_the_document(single_mesh, method, template, values, body, key, status, code):
    options = {} if key else {"key": None}
    reply = single_mesh.request(method, path_of(template, **values), body, **options)
    assert reply.status == status, reply.body
    assert validate(reply, method, template)["error"]["code"] == code
    # The document names the code under this route's status.
    assert code in DOCUMENT["paths"][template][method.lower()]["responses"][str(status)]["x-qnet-codes"]
    validator = jsonschema.Draft4Validator(response_schema(method, template, status))
    assert not validator.is_valid({**reply.body, "error": {**reply.body["error"], "code": "NOT_A_CODE"}})
    assert not validator.is_valid({**reply.body, "success": True})


def test_cancelling_a_finished_job_matches_the_document(single_mesh, submitted):
    reply = single_mesh.request("DELETE", path_of("/execute/{job_id}", **submitted))
    assert reply.status == 409, reply.body
    assert validate(reply, "DELETE", "/execute/{job_id}")["error"]["code"] == "JOB_ALREADY_FINISHED"


def test_the_schemas_refuse_what_the_api_must_not_print(single_mesh, submitted):
    """The validation has teeth: a real job altered as a contract breach would alter it fails."""
    body = single_mesh.request("GET", path_of("/execute/{job_id}", **submitted)).body
    validator = jsonschema.Draft4Validator(response_schema("GET", "/execute/{job_id}", 200))
    validator.validate(body)
    breaches = {
        "an upper-case enum": lambda job: job.update(status="JOB_STATE_COMPLETED"),
        "a 64-bit integer as a string": lambda job: job.update(shots="100"),
        "a missing field": lambda job: job.pop("backend"),
        "an undocumented field": lambda job: job.update(shotz=100),
        "camelCase names": lambda job: job.update(jobId=job.pop("job_id")),
    }
    for name, breach in breaches.items():
        altered = copy.deepcopy(body)
        breach(altered["data"])
        assert not validator.is_valid(altered), name
    assert not validator.is_valid({**body, "success": False})
    assert not validator.is_valid(body["data"]), "a response outside the envelope"


def test_the_gateway_serves_the_document(single_mesh):
    """GET /api/v2/network/openapi.json through Envoy is the committed document."""
    reply = single_mesh.request("GET", "/openapi.json")
    assert reply.status == 200, reply.body
    assert reply.body == DOCUMENT
    assert reply.headers.get("content-type", "").startswith("application/json")
