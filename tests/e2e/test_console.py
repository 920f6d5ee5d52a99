"""The browser console at /console, through the real Envoy, in Debian's headless chromium driven by Playwright.

Every test writes a screenshot of the page it looked at under tests/e2e/artifacts/ (kept out of git).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.e2e.conftest import DEV_KEY, MAINTENANCE_DEVICE, ROOT
from tests.e2e.test_slice import BELL

ARTIFACTS = ROOT / "tests" / "e2e" / "artifacts"
#: Debian's chromium (scripts/test_tools.sh installs it); Playwright's own browser download is never used.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SIX_BACKENDS = {"local_simulator", "ionq_simulator", "ionq_aria", "ibm_brisbane", "ibm_torino", "rigetti_aspen"}
TIMEOUT_MS = 30_000


def origin(mesh) -> str:
    return mesh.url.removesuffix("/api/v2/network")


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


@pytest.fixture(scope="module")
def browser():
    assert pathlib.Path(CHROMIUM).exists(), f"{CHROMIUM} missing: scripts/test_tools.sh installs Debian's chromium"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.set_default_timeout(TIMEOUT_MS)
    yield opened
    opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final.png"), full_page=True)
    context.close()
    assert not errors, f"the page threw: {errors}"


def open_console(page: Page, mesh, key: str = DEV_KEY) -> None:
    page.goto(f"{origin(mesh)}/console#key={key}")


def shoot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_static_files_are_served_without_a_key_with_strict_headers(single_mesh):
    status, headers, body = get(f"{origin(single_mesh)}/console")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="/console/app.js">' in body
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-cache" and headers["etag"]
    status, headers, _ = get(f"{origin(single_mesh)}/console/app.js")
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    request = urllib.request.Request(f"{origin(single_mesh)}/console/style.css")
    _, first, _ = get(f"{origin(single_mesh)}/console/style.css")
    request.add_header("If-None-Match", first["etag"])
    try:
        urllib.request.urlopen(request, timeout=10)
        revalidated = 200
    except urllib.error.HTTPError as error:
        revalidated = error.code
    assert revalidated == 304, "an unchanged file is revalidated by its ETag"
    # Only the table's paths: a file beside the console, a traversal or an unknown file is the 404 envelope.
    for path in ("/console/nope.js", "/console/../static.py", "/console/%2e%2e/static.py", "/console/charts.js/x",
                 "/console/.hidden"):
        status, headers, body = get(f"{origin(single_mesh)}{path}")
        assert status == 404, path
        assert json.loads(body)["error"]["code"] == "NOT_FOUND", (path, body)


def test_the_network_page_shows_the_six_backends_and_draws_each_topology(single_mesh, page):
    open_console(page, single_mesh)
    rows = page.locator("#backends tbody tr")
    expect(rows).to_have_count(6)
    assert {rows.nth(i).get_attribute("data-backend") for i in range(6)} == SIX_BACKENDS
    expect(page.locator(f'#backends tr[data-backend="{MAINTENANCE_DEVICE}"] .status')).to_have_text("maintenance")
    expect(page.locator('#backends tr[data-backend="ibm_brisbane"]')).to_contain_text("$1.6/s")
    # The key came from the fragment: kept in the tab's session, gone from the address bar.
    assert "key=" not in page.url
    assert page.evaluate("sessionStorage.getItem('qnet.api_key')") == DEV_KEY
    expect(page.locator("#topology-backend")).to_have_value("ibm_brisbane")
    expect(page.locator("#topology circle.qubit")).to_have_count(127)
    expect(page.locator("#topology line.link")).to_have_count(144)  # Eagle's heavy-hex couplers
    # Coloured by the calibration: readout errors differ, so the qubits do not share one colour.
    fills = page.eval_on_selector_all("#topology circle.qubit",
                                      "els => new Set(els.map(e => e.getAttribute('fill'))).size")
    assert fills > 10
    expect(page.locator("#stream-state")).to_contain_text("live")
    shoot(page, "network")
    for backend, qubits, links in (("rigetti_aspen", 80, 106), ("ionq_aria", 25, 300), ("ibm_torino", 133, 150)):
        page.select_option("#topology-backend", backend)
        expect(page.locator("#topology-summary")).to_contain_text(f"{backend}: {qubits} qubits, {links} links")
        expect(page.locator("#topology circle.qubit")).to_have_count(qubits)
        page.locator("#topology-view").screenshot(path=str(ARTIFACTS / f"topology-{backend}.png"))


def submit(page: Page, backends: list[str], strategy: str, shots: int) -> str:
    page.click('#tabs button[data-tab="submit"]')
    for backend in backends:
        page.check(f'#submit-backends input[value="{backend}"]')
    page.select_option("#strategy", strategy)
    page.fill("#shots", str(shots))
    page.click("#estimate-button")
    for backend in backends:
        expect(page.locator("#estimate-table")).to_contain_text(backend)
    expect(page.locator("#estimate-total")).to_contain_text(f"{shots} shots")
    shoot(page, f"submit-{strategy}")
    page.click("#run-button")
    job_id = page.locator("#submitted-job").text_content(timeout=TIMEOUT_MS)
    assert job_id.startswith("net_job_")
    return job_id


def test_a_submitted_bell_job_appears_live_and_opens_to_its_histogram(single_mesh, page):
    sent: list[dict] = []
    url = origin(single_mesh).replace("http://", "ws://") + "/api/v2/network/stream"

    def relay(socket) -> None:  # a Playwright WebSocketRoute
        server = socket.connect_to_server()
        socket.on_message(lambda message: (sent.append(json.loads(message)), server.send(message)))

    page.route_web_socket(url, relay)
    open_console(page, single_mesh)
    expect(page.locator("#stream-state")).to_contain_text("live")
    job_id = submit(page, ["ionq_simulator"], "fastest", 1000)
    page.click('#tabs button[data-tab="jobs"]')
    # Completed arrives only from the stream: the submission answered at once (return_immediately).
    row = page.locator(f'#jobs tr[data-job-id="{job_id}"][data-status="completed"]')
    expect(row).to_have_count(1)
    assert int(row.get_attribute("data-event-id")) > 0
    row.click()
    bars = page.locator("#job-detail svg.histogram rect.bar")
    expect(bars).to_have_count(2)
    outcomes = {bars.nth(i).get_attribute("data-outcome"): int(bars.nth(i).get_attribute("data-count"))
                for i in range(2)}
    assert set(outcomes) == {"00", "11"} and sum(outcomes.values()) == 1000
    expect(page.locator("#job-detail")).to_contain_text("fastest")
    expect(page.locator("#job-detail .cost")).to_contain_text("$0 at the published price")  # a free simulator
    expect(page.locator("#job-detail svg.barchart")).to_have_count(1)  # the strategy's scores
    shoot(page, "jobs")
    assert sent[0]["api_key"] == DEV_KEY and sent[0]["since"] == 0


def test_the_stream_resumes_with_since_after_a_reconnect(single_mesh, page):
    sent: list[dict] = []
    routes: list = []
    url = origin(single_mesh).replace("http://", "ws://") + "/api/v2/network/stream"

    def relay(socket) -> None:  # a Playwright WebSocketRoute
        server = socket.connect_to_server()
        routes.append(socket)
        socket.on_message(lambda message: (sent.append(json.loads(message)), server.send(message)))

    page.route_web_socket(url, relay)
    open_console(page, single_mesh)
    expect(page.locator("#stream-state")).to_contain_text("live")
    first = submit(page, ["ionq_simulator"], "fastest", 100)
    page.click('#tabs button[data-tab="jobs"]')
    row = page.locator(f'#jobs tr[data-job-id="{first}"][data-status="completed"]')
    expect(row).to_have_count(1)
    seen = int(row.get_attribute("data-event-id"))
    routes[0].close(code=1001, reason="going away")  # as a draining bridge closes its clients
    expect(page.locator("#stream-state")).to_contain_text("live", timeout=TIMEOUT_MS)
    assert len(sent) == 2 and sent[1]["since"] >= seen, sent
    second = submit(page, ["ionq_simulator"], "fastest", 100)
    page.click('#tabs button[data-tab="jobs"]')
    expect(page.locator(f'#jobs tr[data-job-id="{second}"][data-status="completed"]')).to_have_count(1)


def test_an_all_job_shows_each_backend_beside_the_aggregate_with_its_confidence(single_mesh, page):
    open_console(page, single_mesh)
    expect(page.locator("#stream-state")).to_contain_text("live")
    job_id = submit(page, ["ionq_simulator", "ibm_brisbane"], "all", 1000)
    page.click('#tabs button[data-tab="jobs"]')
    row = page.locator(f'#jobs tr[data-job-id="{job_id}"][data-status="completed"]')
    expect(row).to_have_count(1)
    row.click()
    expect(page.locator("#job-detail .result")).to_have_count(3)
    expect(page.locator('#job-detail .result[data-backend="ibm_brisbane"] rect.bar').first).to_be_visible()
    aggregated = page.locator("#job-detail .result.aggregated")
    expect(aggregated).to_contain_text("confidence")
    reply = single_mesh.request("GET", f"/execute/{job_id}")
    confidence = reply.body["data"]["aggregation_confidence"]
    expect(aggregated).to_contain_text(f"confidence {round(confidence, 3):g}")
    expect(page.locator("#job-detail .cost")).not_to_have_text("–")
    shoot(page, "jobs-all")


def test_the_operator_view_shows_throughput_success_and_percentiles(single_mesh, page):
    single_mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 64})
    open_console(page, single_mesh)
    page.click('#tabs button[data-tab="operator"]')
    expect(page.locator("#metric-cards .card")).to_have_count(7)
    expect(page.locator("#metric-cards")).to_contain_text("jobs/min over 1 min")
    expect(page.locator("#metric-backends tr[data-backend='ionq_simulator']")).to_have_count(1)
    metrics = single_mesh.request("GET", "/metrics").body["data"]
    runs = next(b for b in metrics["backends"] if b["backend"] == "ionq_simulator")["runs"]
    cell = page.locator("#metric-backends tr[data-backend='ionq_simulator'] td").nth(1)
    assert int(cell.text_content()) >= runs - 1  # read a moment apart; runs only grow
    expect(page.locator("#metric-charts svg.barchart")).to_have_count(3)
    shoot(page, "operator")


def test_a_wrong_key_shows_the_documented_error(single_mesh, page):
    documented = single_mesh.request("GET", "/backends", key="not-a-key").body["error"]
    assert documented["code"] == "UNAUTHENTICATED"
    open_console(page, single_mesh, key="not-a-key")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error-code")).to_have_text("UNAUTHENTICATED")
    expect(page.locator("#error-message")).to_have_text(documented["message"])
    expect(page.locator("#backends tbody tr")).to_have_count(0)
    shoot(page, "wrong-key")
    # Pasting the right key in the page clears the error and loads the network.
    page.fill("#api-key", DEV_KEY)
    page.click('#key-form button[type="submit"]')
    expect(page.locator("#backends tbody tr")).to_have_count(6)
    expect(page.locator("#error")).to_be_hidden()
