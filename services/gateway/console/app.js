// qnet console: the network, live jobs, a submit form and the operator's metrics, over the public REST API
// (/api/v2/network) and the WebSocket stream. The API key stays in this tab's sessionStorage; a key in the URL
// fragment (#key=...) is taken and then removed from the address bar.

import { barChart, fmt, h, histogram, legend, topology } from "/console/charts.js";

const API = "/api/v2/network";
const STREAM = "/api/v2/network/stream";
const KEY_STORE = "qnet.api_key";

const state = {
  key: "",
  backends: new Map(), // id -> the backend as GET /backends lists it
  jobs: new Map(), // job_id -> {job_id, status, backend, updated, event_id}
  lastEventId: 0, // the stream's cursor: resumed with `since` after a reconnect
  socket: null,
  reconnectDelay: 500,
  openJob: null,
  metricsTimer: null,
  networkTimer: null,
  estimateTimer: null,
};

const $ = (selector) => document.querySelector(selector);

// ---- errors: the envelope's code and message, as the API documents them --------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function showError(code, message, status = 0) {
  $("#error-code").textContent = code;
  $("#error-status").textContent = status ? `(HTTP ${status})` : "";
  $("#error-message").textContent = message;
  $("#error").hidden = false;
}

function clearError() {
  $("#error").hidden = true;
}

function report(error) {
  if (error instanceof ApiError) showError(error.code, error.message, error.status);
  else showError("NETWORK_ERROR", String(error && error.message ? error.message : error));
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, "NETWORK_ERROR", `could not reach ${API}${path}: ${error.message}`);
  }
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    throw new ApiError(response.status, "INVALID_RESPONSE", `HTTP ${response.status} without a JSON body`);
  }
  if (!response.ok || !envelope.success) {
    const err = (envelope && envelope.error) || {};
    throw new ApiError(response.status, err.code || `HTTP_${response.status}`, err.message || "request failed");
  }
  return envelope.data;
}

// ---- the key ------------------------------------------------------------------------------------------------

function takeKeyFromFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const key = params.get("key");
  if (key) {
    sessionStorage.setItem(KEY_STORE, key);
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
}

async function useKey(key) {
  state.key = key;
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
  clearError();
  closeStream();
  state.jobs.clear();
  state.lastEventId = 0;
  renderJobs();
  if (!key) {
    showError("UNAUTHENTICATED", "paste an API key (make api-key prints one) and press Use key");
    return;
  }
  try {
    await loadNetwork();
  } catch (error) {
    report(error);
    return; // a wrong key: no stream either
  }
  openStream();
  showTab($("#tabs button.active").dataset.tab); // its refresh timers, now with this key
}

// ---- tabs ---------------------------------------------------------------------------------------------------

function showTab(name) {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const page of document.querySelectorAll(".page")) page.hidden = page.id !== `page-${name}`;
  clearInterval(state.metricsTimer);
  clearInterval(state.networkTimer);
  if (name === "network" && state.key) {
    state.networkTimer = setInterval(() => refreshBackends().catch(report), 10000);
  }
  if (name === "operator" && state.key) {
    loadMetrics();
    state.metricsTimer = setInterval(loadMetrics, 5000);
  }
  if (name === "submit" && state.key) scheduleEstimate(0);
}

// ---- the network --------------------------------------------------------------------------------------------

function price(p) {
  if (!p) return "–";
  const parts = [];
  if (p.per_task) parts.push(`$${fmt(p.per_task, 2)}/task`);
  if (p.per_shot) parts.push(`$${fmt(p.per_shot, 5)}/shot`);
  if (p.per_second) parts.push(`$${fmt(p.per_second, 2)}/s`);
  return parts.length ? parts.join(" + ") : "free";
}

function seconds(value) {
  if (!Number.isFinite(value)) return "–";
  if (value > 0 && value < 0.001) return `${fmt(value * 1e6, 0)} µs`;
  return value < 1 ? `${fmt(value * 1000, 1)} ms` : `${fmt(value, 2)} s`;
}

// The backends' statuses, queues and waits (GET /backends, GET /status); every 10 s while the page is open.
async function refreshBackends() {
  const [backends, status] = await Promise.all([api("GET", "/backends"), api("GET", "/status")]);
  state.backends = new Map(backends.map((b) => [b.id, b]));
  const overall = $("#overall");
  overall.textContent = `${status.overall_status} · ${status.total_capacity} qubits online · ${status.active_jobs} active jobs`;
  overall.className = `pill ${status.overall_status}`;
  renderBackends();
  renderSubmitBackends();
  return backends;
}

async function loadNetwork() {
  const backends = await refreshBackends();
  const select = $("#topology-backend");
  const chosen = select.value || "ibm_brisbane";
  select.replaceChildren(...backends.map((b) => h("option", { value: b.id, selected: b.id === chosen }, b.id)));
  if (!state.backends.has(select.value) && backends.length) select.value = backends[0].id;
  await loadTopology(select.value);
}

function renderBackends() {
  const rows = [...state.backends.values()].map((b) => h("tr", { "data-backend": b.id },
    h("td", {}, h("strong", {}, b.id), h("div", { class: "muted" }, b.name)),
    h("td", {}, b.provider),
    h("td", {}, h("span", { class: `status ${b.status}` }, b.status)),
    h("td", {}, b.num_qubits),
    h("td", {}, b.connectivity.replaceAll("_", " ")),
    h("td", { class: "queue" }, b.queue_depth),
    h("td", {}, b.running),
    h("td", {}, seconds(b.estimated_wait_s)),
    h("td", { title: b.price ? b.price.source : "" }, price(b.price))));
  $("#backends tbody").replaceChildren(...rows);
}

async function loadTopology(id) {
  if (!id) return;
  const [backend, calibration] = await Promise.all([api("GET", `/backends/${id}`),
    api("GET", `/backends/${id}/calibration`)]);
  const n = backend.num_qubits;
  const allToAll = backend.connectivity === "all_to_all" || !backend.coupling_map.length;
  let edges = backend.coupling_map.map((e) => [e.control, e.target]);
  if (allToAll) {
    edges = [];
    for (let a = 0; a < n; a++) for (let b = a + 1; b < n; b++) edges.push([a, b]);
  }
  const qubits = new Map(calibration.qubits.map((q) => [q.qubit, q]));
  // Two-qubit errors by pair: the device's entangling gates (ECR, CZ, MS...), the worst direction of a pair.
  // A gate listed with no qubits applies to every pair (an all-to-all trapped-ion device).
  const pairError = new Map();
  let uniform;
  for (const gate of calibration.gates) {
    if (gate.qubits.length === 2) {
      const [a, b] = gate.qubits[0] < gate.qubits[1] ? gate.qubits : [gate.qubits[1], gate.qubits[0]];
      const key = `${a}-${b}`;
      if (["rzz"].includes(gate.gate)) continue; // a fractional gate: the native entangler is the one to show
      pairError.set(key, Math.max(pairError.get(key) ?? 0, gate.error));
    } else if (gate.qubits.length === 0 && ["ms", "cz", "ecr", "cx", "zz"].includes(gate.gate)) {
      uniform = gate.error;
    }
  }
  const summary = calibration.summary || {};
  const drawn = topology({
    n, edges, layout: allToAll ? "all_to_all" : backend.connectivity,
    qubitError: (q) => qubits.get(q)?.readout_error ?? (summary.mean_readout_error || undefined),
    linkError: (a, b) => pairError.get(`${a}-${b}`) ?? uniform ?? (summary.mean_two_qubit_error || undefined),
    describe: (q) => {
      const c = qubits.get(q);
      return c ? `qubit ${q}: readout error ${fmt(c.readout_error, 4)}, T1 ${fmt(c.t1_us, 1)} µs, T2 ${fmt(c.t2_us, 1)} µs`
        : `qubit ${q}: no calibration (${calibration.source})`;
    },
  });
  $("#topology-view").replaceChildren(drawn.svg);
  $("#topology-legend").replaceChildren(legend("qubit readout error", drawn.qubitScale),
    legend("two-qubit gate error", drawn.linkScale));
  $("#topology-summary").textContent = `${backend.id}: ${n} qubits, ${drawn.links} links, ` +
    `${backend.connectivity.replaceAll("_", " ")} · calibration ${calibration.source} (${calibration.taken_at}) · ` +
    `mean readout error ${fmt(summary.mean_readout_error, 4)}, mean two-qubit error ${fmt(summary.mean_two_qubit_error, 4)}`;
}

// ---- the stream ---------------------------------------------------------------------------------------------

function streamState(text, cls) {
  const pill = $("#stream-state");
  pill.textContent = `stream: ${text}`;
  pill.className = `pill ${cls}`;
}

function openStream() {
  const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${STREAM}`;
  const socket = new WebSocket(url);
  state.socket = socket;
  let refused = false;
  streamState("connecting", "reconnecting");
  socket.onopen = () => {
    socket.send(JSON.stringify({ api_key: state.key, subscribe: ["job_updates", "backend_status"],
      since: state.lastEventId }));
  };
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "subscribed") {
      state.reconnectDelay = 500;
      streamState(`live (since ${event.since})`, "live");
    } else if (event.type === "error") {
      refused = event.code === "UNAUTHENTICATED";
      showError(event.code, event.message);
    } else if (event.type === "job_update") {
      state.lastEventId = Math.max(state.lastEventId, event.event_id);
      onJobUpdate(event);
    } else if (event.type === "backend_status") {
      state.lastEventId = Math.max(state.lastEventId, event.event_id);
      onBackendStatus(event);
    }
  };
  socket.onclose = (close) => {
    if (state.socket !== socket) return; // replaced on purpose
    state.socket = null;
    if (refused || close.code === 4001) {
      streamState("refused", "closed");
      return;
    }
    streamState(`reconnecting (closed ${close.code})`, "reconnecting");
    setTimeout(() => { if (!state.socket && state.key) openStream(); }, state.reconnectDelay);
    state.reconnectDelay = Math.min(10000, state.reconnectDelay * 2);
  };
}

function closeStream() {
  const socket = state.socket;
  state.socket = null;
  if (socket) socket.close(1000, "key changed");
  streamState("off", "");
}

function onJobUpdate(event) {
  const known = state.jobs.get(event.job_id) || { job_id: event.job_id };
  Object.assign(known, { status: event.status, backend: event.backend || known.backend, updated: event.timestamp,
    event_id: event.event_id, error_code: event.error_code });
  state.jobs.set(event.job_id, known);
  renderJobs();
  if (state.openJob === event.job_id && ["completed", "failed", "cancelled"].includes(event.status)) {
    openJob(event.job_id);
  }
}

function onBackendStatus(event) {
  const backend = state.backends.get(event.id);
  if (!backend) return;
  backend.status = event.status;
  backend.queue_depth = event.queue_depth;
  renderBackends();
}

// ---- jobs ---------------------------------------------------------------------------------------------------

function renderJobs() {
  const jobs = [...state.jobs.values()].sort((a, b) => (b.updated || "").localeCompare(a.updated || ""));
  const rows = jobs.map((job) => h("tr", {
    class: `clickable${state.openJob === job.job_id ? " selected" : ""}`, "data-job-id": job.job_id,
    "data-status": job.status, "data-event-id": job.event_id, onclick: () => openJob(job.job_id),
  },
  h("td", {}, h("code", {}, job.job_id)),
  h("td", {}, h("span", { class: `status ${job.status}` }, job.status), job.error_code ? ` ${job.error_code}` : ""),
  h("td", {}, job.backend || (job.status === "completed" ? "several (strategy all)" : "–")),
  h("td", { class: "muted" }, job.updated ? new Date(job.updated).toLocaleTimeString() : "–")));
  $("#jobs tbody").replaceChildren(...rows);
  $("#jobs-empty").hidden = jobs.length > 0;
}

// The cost of one backend's run at its published price (the job record carries no cost of its own).
function runCost(backendId, shots, executionS) {
  const p = state.backends.get(backendId)?.price;
  if (!p) return undefined;
  return p.per_task + p.per_shot * shots + p.per_second * executionS;
}

async function openJob(jobId) {
  state.openJob = jobId;
  renderJobs();
  const detail = $("#job-detail");
  let job;
  try {
    job = await api("GET", `/execute/${jobId}`);
  } catch (error) {
    report(error);
    return;
  }
  if (state.openJob !== jobId) return;
  const runs = job.results || [];
  const costs = runs.filter((r) => r.status === "completed" || r.execution_time_s > 0)
    .map((r) => runCost(r.backend, job.shots, r.execution_time_s)).filter(Number.isFinite);
  const cost = costs.length ? costs.reduce((a, v) => a + v, 0)
    : job.backend ? runCost(job.backend, job.shots, job.execution_time_s) : undefined;
  const parts = [
    h("h2", {}, h("code", {}, job.job_id), h("span", { class: `status ${job.status}` }, job.status)),
    h("dl", {},
      h("dt", {}, "strategy"), h("dd", {}, job.strategy),
      h("dt", {}, "backend"), h("dd", {}, job.backend || (job.strategy === "all" ? "every listed backend" : "–")),
      h("dt", {}, "shots"), h("dd", {}, job.shots),
      h("dt", {}, "queue · execution"), h("dd", {}, `${seconds(job.queue_time_s)} · ${seconds(job.execution_time_s)}`),
      h("dt", {}, "cost"), h("dd", { class: "cost" }, Number.isFinite(cost) ? `$${fmt(cost, 4)} at the published price` : "–"),
      h("dt", {}, "created · finished"), h("dd", {}, `${job.created_at || "–"} · ${job.finished_at || "–"}`)),
  ];
  if (job.error && job.error.code) {
    parts.push(h("div", { class: "error" }, h("strong", {}, job.error.code), " ", job.error.message));
  }
  const aggregated = job.aggregated_counts && Object.keys(job.aggregated_counts).length;
  if (job.strategy === "all" && runs.length) {
    parts.push(h("h3", {}, "Results per backend", aggregated ? " and aggregated" : ""));
    const charts = runs.map((r) => h("div", { class: "result", "data-backend": r.backend },
      Object.keys(r.counts || {}).length ? histogram(r.counts, { title: `${r.backend} (${r.status})`, width: 300, height: 200 })
        : h("p", {}, `${r.backend}: ${r.status}${r.error ? " " + r.error.code : ""}`)));
    if (aggregated) {
      charts.push(h("div", { class: "result aggregated" }, histogram(job.aggregated_counts, {
        title: `aggregated: ${job.aggregation_method}, confidence ${fmt(job.aggregation_confidence, 3)}`,
        width: 400, height: 200 })));
    }
    parts.push(h("div", { class: "results" }, charts));
  } else if (Object.keys(job.counts || {}).length) {
    parts.push(h("h3", {}, "Counts"), h("div", { class: "results" }, h("div", { class: "result" },
      histogram(job.counts, { title: `${job.backend}: ${job.shots} shots` }))));
  }
  const selection = job.selection;
  if (selection && selection.scores && selection.scores.length) {
    parts.push(h("h3", {}, "Strategy scores ", h("span", { class: "muted" },
      `${selection.strategy}: ${selection.metric}; ${selection.reason}`)));
    parts.push(barChart(selection.scores.map((sc) => ({ label: sc.backend, value: sc.score, muted: !sc.eligible,
      note: sc.eligible ? "" : `(ineligible: ${sc.note})` })), { width: 520 }));
  }
  detail.replaceChildren(...parts);
}

// ---- submit -------------------------------------------------------------------------------------------------

function renderSubmitBackends() {
  const box = $("#submit-backends");
  const ticked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  const items = [...state.backends.values()].map((b) => h("label", {},
    h("input", { type: "checkbox", value: b.id, checked: ticked.has(b.id), onchange: () => scheduleEstimate() }),
    ` ${b.id} `, h("span", { class: `status ${b.status}` }, b.status)));
  box.replaceChildren(h("legend", {}, "Backends (none ticked: every backend)"), ...items);
}

function submission() {
  const backends = [...document.querySelectorAll("#submit-backends input:checked")].map((i) => i.value);
  return { qasm: $("#qasm").value, backends, strategy: $("#strategy").value, shots: Number($("#shots").value) };
}

function scheduleEstimate(delay = 400) {
  clearTimeout(state.estimateTimer);
  state.estimateTimer = setTimeout(estimate, delay);
}

async function estimate() {
  if (!state.key) return;
  const target = $("#estimate");
  try {
    const result = await api("POST", "/estimate", submission());
    clearError();
    const selected = new Set(result.selected);
    target.replaceChildren(h("table", { class: "grid-table", id: "estimate-table" },
      h("thead", {}, h("tr", {}, ["Backend", "Cost", "Est. execution", "Eligible", "Note"].map((t) => h("th", {}, t)))),
      h("tbody", {}, result.backends.map((b) => h("tr", { class: selected.has(b.backend) ? "selected" : "" },
        h("td", {}, b.backend, selected.has(b.backend) ? " ✓ selected" : ""),
        h("td", {}, `$${fmt(b.cost, 4)}`), h("td", {}, seconds(b.estimated_execution_s)),
        h("td", {}, b.eligible ? "yes" : "no"), h("td", { class: "muted" }, b.note))))),
    h("p", { id: "estimate-total" }, `Total for ${result.strategy} with ${result.shots} shots: `,
      h("strong", {}, `$${fmt(result.total_cost, 4)} ${result.currency}`)));
  } catch (error) {
    target.replaceChildren();
    report(error);
  }
}

async function run(event) {
  event.preventDefault();
  const body = { ...submission(), return_immediately: true };
  if (body.strategy === "all") body.aggregate = $("#aggregate").checked;
  const out = $("#submit-result");
  out.textContent = "submitting…";
  try {
    const job = await api("POST", "/execute", body);
    clearError();
    out.replaceChildren("submitted ", h("code", { id: "submitted-job" }, job.job_id), ` (${job.status}): see Jobs`);
    if (!state.jobs.has(job.job_id)) {
      state.jobs.set(job.job_id, { job_id: job.job_id, status: job.status, backend: job.backend, updated: job.created_at });
    }
    renderJobs();
  } catch (error) {
    out.textContent = "";
    report(error);
  }
}

// ---- operator -----------------------------------------------------------------------------------------------

function card(label, value) {
  return h("div", { class: "card" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}

async function loadMetrics() {
  let m;
  try {
    m = await api("GET", "/metrics");
  } catch (error) {
    report(error);
    return;
  }
  const runs = m.backends.reduce((a, b) => a + b.runs, 0);
  const succeeded = m.backends.reduce((a, b) => a + b.runs * b.success_rate, 0);
  const byStatus = m.jobs_by_status || {};
  const finished = (byStatus.completed || 0) + (byStatus.failed || 0);
  $("#metric-cards").replaceChildren(
    ...m.throughput.map((t) => card(`jobs/min over ${t.window_minutes} min (${t.jobs} jobs)`, fmt(t.jobs_per_minute, 2))),
    card("job success rate (completed / finished)", finished ? `${fmt((100 * (byStatus.completed || 0)) / finished, 1)}%` : "–"),
    card("backend run success rate", runs ? `${fmt((100 * succeeded) / runs, 1)}%` : "–"),
    card("shots executed", m.shots_executed),
    card("cost spent", `$${fmt(m.cost_spent, 2)} ${m.currency}`));
  const ms = (v) => v * 1000;
  $("#metric-charts").replaceChildren(
    barChart(Object.entries(byStatus).map(([k, v]) => ({ label: k, value: v })), { title: "jobs by status", width: 360 }),
    barChart(m.backends.flatMap((b) => [{ label: `${b.backend} p50`, value: ms(b.queue_time_p50_s) },
      { label: `${b.backend} p95`, value: ms(b.queue_time_p95_s), muted: true }]), { title: "queue time (ms)", width: 420 }),
    barChart(m.backends.flatMap((b) => [{ label: `${b.backend} p50`, value: ms(b.execution_time_p50_s) },
      { label: `${b.backend} p95`, value: ms(b.execution_time_p95_s), muted: true }]),
    { title: "execution time (ms)", width: 420 }));
  $("#metric-backends tbody").replaceChildren(...m.backends.map((b) => h("tr", { "data-backend": b.backend },
    h("td", {}, b.backend), h("td", {}, b.runs), h("td", {}, `${fmt(b.success_rate * 100, 1)}%`),
    h("td", {}, seconds(b.queue_time_p50_s)), h("td", {}, seconds(b.queue_time_p95_s)),
    h("td", {}, seconds(b.execution_time_p50_s)), h("td", {}, seconds(b.execution_time_p95_s)), h("td", {}, b.shots))));
}

// ---- start --------------------------------------------------------------------------------------------------

function start() {
  takeKeyFromFragment();
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useKey($("#api-key").value.trim());
    $("#api-key").value = "";
  });
  $("#forget-key").addEventListener("click", () => useKey(""));
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("#topology-backend").addEventListener("change", (event) => loadTopology(event.target.value).catch(report));
  $("#submit-form").addEventListener("submit", run);
  $("#estimate-button").addEventListener("click", () => scheduleEstimate(0));
  for (const id of ["#qasm", "#strategy", "#shots"]) $(id).addEventListener("input", () => scheduleEstimate());
  window.addEventListener("hashchange", () => {
    takeKeyFromFragment();
    const key = sessionStorage.getItem(KEY_STORE) || "";
    if (key !== state.key) useKey(key);
  });
  useKey(sessionStorage.getItem(KEY_STORE) || "");
}

start();
