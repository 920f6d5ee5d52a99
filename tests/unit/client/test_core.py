"""The client's pure parts: configuration, reading answers, the error table, retries and the stream cursor."""

from __future__ import annotations

import json
import pathlib
import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qnet_client import errors, models
from qnet_client._core import Call, Config, RetryPolicy, StreamCursor, base_url, close_error, read_answer

README = pathlib.Path(__file__).resolve().parents[3] / "README.md"


def readme_error_table() -> dict[str, int]:
    section = README.read_text().split("### Errors", 1)[1].split("\n### ", 1)[0]
    table = {}
    for codes, status in re.findall(r"^\| (`[A-Z_`, ]+`) \| (\d{3}) \|", section, re.M):
        for code in re.findall(r"`([A-Z_]+)`", codes):
            table[code] = int(status)
    return table


def test_every_code_of_the_readme_has_its_own_exception_with_its_status():
    documented = readme_error_table()
    assert len(documented) >= 20
    for code, status in documented.items():
        cls = errors.CLASSES[code]
        assert cls.code == code and cls.status == status and issubclass(cls, errors.QnetError)
    assert len({cls for cls in errors.CLASSES.values()}) == len(errors.CLASSES)
    assert {"UNAVAILABLE", "BACKEND_UNAVAILABLE", "WATCHER_TOO_SLOW"} == errors.RETRYABLE_CODES


def test_an_unknown_code_still_raises_with_its_code_and_status():
    error = errors.error_for("SOMETHING_NEW", 418, "teapot")
    assert type(error) is errors.QnetError and (error.code, error.status, error.message) == (
        "SOMETHING_NEW", 418, "teapot")
    assert not error.retryable and errors.error_for("NEW_OUTAGE", 503, "x").retryable


@pytest.mark.parametrize(("given", "expected"), [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080/api/v2/network"),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/api/v2/network"),
    ("https://api.softquantus.com/api/v2/network/", "https://api.softquantus.com/api/v2/network"),
    ("http://host/prefix", "http://host/prefix/api/v2/network"),
])
def test_base_url_accepts_the_host_or_the_full_api_url(given, expected):
    assert base_url(given) == expected


def test_a_url_without_scheme_is_refused_with_the_variable_named():
    with pytest.raises(ValueError, match="QNET_URL"):
        base_url("127.0.0.1:8080")


def test_config_reads_qnet_then_qcos_variables_and_arguments_win():
    assert Config.resolve(env={}) == Config("http://127.0.0.1:8080/api/v2/network", "")
    assert Config.resolve(env={"QCOS_API_KEY": "qcos"}).api_key == "qcos"
    assert Config.resolve(env={"QCOS_API_KEY": "qcos", "QNET_API_KEY": "qnet"}).api_key == "qnet"
    config = Config.resolve("https://h", "arg", env={"QNET_URL": "http://other", "QNET_API_KEY": "qnet"})
    assert config == Config("https://h/api/v2/network", "arg")
    assert config.stream_url == "wss://h/api/v2/network/stream"


SPEC_JOB = {"job_id": "net_job_xyz789", "status": "completed", "results": [
    {"backend": "ionq_simulator", "counts": {"00": 510, "11": 514}},
    {"backend": "ibm_brisbane", "counts": {"00": 505, "11": 519}}],
    "aggregated_counts": {"00": 510, "11": 514}, "aggregation_confidence": 0.97, "a_field_from_the_future": 1}


def test_a_success_is_read_into_typed_results_ignoring_unknown_fields():
    raw = json.dumps({"success": True, "data": SPEC_JOB}).encode()
    job = read_answer(Call("GET", "/execute/x", models.Job), 200, raw)
    assert isinstance(job, models.Job) and job.done and job.best_counts == {"00": 510, "11": 514}
    assert [r.backend for r in job.results] == ["ionq_simulator", "ibm_brisbane"]
    assert isinstance(job.results[0], models.BackendRun) and job.results[0].counts["11"] == 514
    assert models.to_json(job)["results"][1]["counts"] == {"00": 505, "11": 519}
    listing = read_answer(Call("GET", "/backends", list[models.Backend]), 200,
                          b'{"success": true, "data": [{"id": "a", "coupling_map": [{"control": 1}]}]}')
    assert listing[0].coupling_map == [models.CouplingEdge(1, 0)]


def test_an_error_envelope_raises_its_class_with_code_status_message_and_the_failed_job():
    raw = json.dumps({"success": False, "error": {"code": "ALL_BACKENDS_FAILED", "message":
                      "all backends failed (ionq_aria: X) (job net_job_6119c2f8af1a)"}}).encode()
    with pytest.raises(errors.CLASSES["ALL_BACKENDS_FAILED"]) as caught:
        read_answer(Call("POST", "/execute", models.Job), 503, raw)
    assert caught.value.status == 503 and caught.value.job_id == "net_job_6119c2f8af1a"
    assert not caught.value.retryable and "ionq_aria" in str(caught.value)


def test_a_503_without_the_envelope_is_a_retryable_unavailable():
    with pytest.raises(errors.CLASSES["UNAVAILABLE"]) as caught:
        read_answer(Call("GET", "/status"), 503, b"upstream connect error")
    assert caught.value.retryable and "upstream connect error" in caught.value.message


def test_submissions_send_one_idempotency_key_and_the_bearer_key():
    headers = Call("POST", "/execute", body={"qasm": "x"}, idempotency_key="k1").headers("secret")
    assert headers["Idempotency-Key"] == "k1" and headers["Authorization"] == "Bearer secret"
    assert "Idempotency-Key" not in Call("GET", "/status").headers("secret")


def test_retries_back_off_within_bounds_and_only_for_retryable_errors():
    policy = RetryPolicy(attempts=5, base_delay_s=0.2, max_delay_s=1.0, budget_s=100)
    rng = random.Random(1)
    unavailable = errors.error_for("UNAVAILABLE", 503, "db down")
    delays = [policy.delay(unavailable, attempt, 0.0, rng) for attempt in range(1, 5)]
    caps = [0.2, 0.4, 0.8, 1.0]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert policy.delay(unavailable, 5, 0.0, rng) is None  # attempts spent
    assert policy.delay(errors.ConnectionFailed("reset"), 1, 0.0, rng) is not None
    assert policy.delay(errors.error_for("INVALID_QASM", 400, "x"), 1, 0.0, rng) is None
    assert policy.delay(errors.error_for("NO_BACKENDS", 503, "x"), 1, 0.0, rng) is None
    assert RetryPolicy(budget_s=1.0).delay(unavailable, 1, 0.9, rng) is None  # past the budget


def job_update(event_id: int, job_id: str = "j1", status: str = "running", timestamp: str = "") -> dict:
    return {"type": "job_update", "event_id": event_id, "job_id": job_id, "status": status,
            "timestamp": timestamp or "2026-11-24T19:46:19.977Z"}


def test_the_cursor_resumes_after_the_last_event_and_drops_repeats():
    cursor = StreamCursor(since=0)
    assert json.loads(cursor.subscribe_message("k"))["since"] == 0
    cursor.on_subscribed(0.0)
    assert cursor.accept({"type": "subscribed"}) is None
    assert cursor.accept(job_update(5)).event_id == 5
    assert cursor.accept(job_update(7)).event_id == 7
    assert json.loads(cursor.subscribe_message("k")) == {"api_key": "k", "subscribe": ["job_updates",
                                                                                      "backend_status"], "since": 7}
    assert cursor.accept(job_update(6)) is None and cursor.accept(job_update(7)) is None  # replayed overlap
    assert cursor.accept(job_update(8)).event_id == 8


def test_the_cursor_keeps_one_jobs_events_but_still_moves_past_the_others():
    cursor = StreamCursor(job_id="mine")
    assert cursor.accept(job_update(3, "other")) is None and cursor.since == 3
    assert cursor.accept(job_update(4, "mine")).job_id == "mine"


def test_a_stream_broken_before_any_event_replays_from_the_start_without_older_events():
    cursor = StreamCursor(since=0)
    cursor.on_subscribed(1_800_000_000.0)  # 2027-01-15T08:00:00Z
    assert json.loads(cursor.subscribe_message("k"))["since"] == 1
    assert cursor.accept(job_update(1, timestamp="2026-01-01T00:00:00Z")) is None  # long before: dropped
    kept = cursor.accept(job_update(2, timestamp="2027-01-15T08:00:00.5Z"))  # after the first subscription
    assert kept is not None and kept.event_id == 2


def test_an_error_message_on_the_stream_raises_its_code():
    with pytest.raises(errors.CLASSES["UNAUTHENTICATED"]) as caught:
        StreamCursor().accept({"type": "error", "code": "UNAUTHENTICATED", "message": "invalid api_key"})
    assert caught.value.status == 401


def test_only_a_bad_key_or_path_stops_reconnecting():
    assert close_error(4001, "invalid api_key").code == "UNAUTHENTICATED"
    assert close_error(4009, "too slow") is None and close_error(1001, "") is None and close_error(None, "") is None


@given(st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=30), st.data())
def test_across_any_reconnects_every_event_is_delivered_once_in_order(cut_points, data):
    """The log has events 1..N; connections break at arbitrary points, and each reconnect replays from some
    point at or before the cursor (the bridge's replay overlapping the live stream): the caller still sees
    each event once, in order."""
    log = [job_update(i, job_id=f"j{i % 3}") for i in range(1, 61)]
    cursor, seen = StreamCursor(since=0), []
    position = 0
    for cut in sorted(cut_points):
        start = data.draw(st.integers(min_value=0, max_value=max(0, cursor.since)))  # replay overlap
        since = json.loads(cursor.subscribe_message("k"))["since"]
        cursor.on_subscribed(0.0)
        assert since == cursor.since or (cursor.since == 0 and since == 1)  # nothing seen yet: from the start
        for message in log[start:cut]:
            event = cursor.accept(message)
            if event is not None:
                seen.append(event.event_id)
        position = max(position, cut)
    assert seen == list(range(1, position + 1))
