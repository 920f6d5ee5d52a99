"""The WebSocket stream through Envoy, with a real WebSocket client."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import DEV_KEY
from tests.e2e.test_slice import BELL


def ws_url(mesh) -> str:
    return mesh.url.replace("http://", "ws://") + "/stream"


async def next_message(ws, predicate, timeout: float = 60.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if predicate(message):
                return message


async def test_job_updates_arrive_live_with_counts_on_completion(mesh):
    async with connect(ws_url(mesh)) as ws:
        await ws.send(json.dumps({"api_key": DEV_KEY, "subscribe": ["job_updates", "backend_status"]}))
        subscribed = json.loads(await ws.recv())
        assert subscribed["type"] == "subscribed" and subscribed["topics"] == ["backend_status", "job_updates"]
        reply = await asyncio.to_thread(
            mesh.request, "POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 128}
        )
        job_id = reply.body["data"]["job_id"]
        seen = []
        done = await next_message(ws, lambda m: m.get("job_id") == job_id and (seen.append(m["status"]) or
                                                                               m["status"] == "completed"))
        assert seen[0] == "queued" and "running" in seen
        assert done["type"] == "job_update" and done["backend"] == "ionq_simulator"
        assert sum(done["counts"].values()) == 128 and done["event_id"] > 0 and done["timestamp"].endswith("Z")


async def test_the_stream_takes_no_compression_that_a_client_offers(mesh):
    """Messages of a few hundred bytes: permessage-deflate (which the websockets client and browsers offer) took a
    tenth of the bridge's samples under 500 subscribers, and a zlib context per subscriber, for little saved."""
    async with connect(ws_url(mesh)) as ws:
        offered = ws.request.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in offered
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        await ws.send(json.dumps({"api_key": DEV_KEY, "subscribe": ["job_updates"]}))
        assert json.loads(await ws.recv())["type"] == "subscribed"


async def test_a_reconnecting_client_gets_what_it_missed_with_since(mesh):
    reply = mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 32})
    job_id = reply.body["data"]["job_id"]
    async with connect(ws_url(mesh)) as ws:
        await ws.send(json.dumps({"api_key": DEV_KEY, "subscribe": ["job_updates"], "since": 1}))
        await ws.recv()
        statuses = []
        await next_message(ws, lambda m: m.get("job_id") == job_id and (statuses.append(m["status"]) or
                                                                         m["status"] == "completed"))
        assert statuses == ["queued", "running", "completed"]


async def test_a_key_sees_only_its_own_jobs(mesh):
    other = mesh.create_key("stream-other")
    async with connect(ws_url(mesh)) as mine, connect(ws_url(mesh)) as theirs:
        for ws, key in ((mine, DEV_KEY), (theirs, other)):
            await ws.send(json.dumps({"api_key": key, "subscribe": ["job_updates"]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
        job = (await asyncio.to_thread(mesh.request, "POST", "/execute", {
            "qasm": BELL, "backends": ["ionq_simulator"], "shots": 10})).body["data"]
        # The owner's stream carries the job to its end; the other key's carries nothing of it meanwhile.
        await next_message(mine, lambda m: m.get("job_id") == job["job_id"] and m["status"] == "completed")
        with pytest.raises(TimeoutError):
            await next_message(theirs, lambda m: m.get("type") == "job_update", timeout=1.0)


async def test_a_bad_key_gets_an_error_and_close_code_4001(mesh):
    async with connect(ws_url(mesh)) as ws:
        await ws.send(json.dumps({"api_key": "qnet_bad", "subscribe": ["job_updates"]}))
        error = json.loads(await ws.recv())
        assert error == {"type": "error", "code": "UNAUTHENTICATED", "message": error["message"]}
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 4001


async def test_malformed_json_and_unknown_subscriptions_keep_the_connection_usable(mesh):
    async with connect(ws_url(mesh)) as ws:
        await ws.send("{not json")
        assert json.loads(await ws.recv())["code"] == "INVALID_ARGUMENT"
        await ws.send(json.dumps({"api_key": DEV_KEY, "subscribe": ["gossip"]}))
        assert "gossip" in json.loads(await ws.recv())["message"]
        await ws.send(json.dumps({"api_key": DEV_KEY, "subscribe": ["backend_status"]}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
