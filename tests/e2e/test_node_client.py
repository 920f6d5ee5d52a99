"""The spec's JavaScript example, run under Node with the `ws` package, through Envoy."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

from tests.e2e.conftest import DEV_KEY
from tests.e2e.test_slice import BELL

NODE_DIR = pathlib.Path(__file__).resolve().parent / "node"


@pytest.mark.slow
def test_the_specs_javascript_example_prints_live_job_updates(mesh):
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "ws").exists():
        pytest.fail("node or its ws package is missing (make test-e2e installs both)")
    url = mesh.url.replace("http://", "ws://") + "/stream"
    process = subprocess.Popen([node, str(NODE_DIR / "spec_example.js"), url, DEV_KEY], stdout=subprocess.PIPE,
                               text=True)
    lines = []
    for line in process.stdout:
        lines.append(line.strip())
        if line.strip() == "READY":
            break
    reply = mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 16})
    assert reply.status == 200, reply.body
    job_id = reply.body["data"]["job_id"]
    out, _ = process.communicate(timeout=60)
    lines += out.splitlines()
    assert process.returncode == 0, lines
    for status in ("queued", "running", "completed"):
        assert f"Job {job_id}: {status}" in lines
