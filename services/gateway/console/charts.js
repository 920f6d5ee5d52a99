// qnet console: DOM and SVG helpers, histograms, bar charts and the coupling-graph layouts. No dependencies.

const SVG_NS = "http://www.w3.org/2000/svg";

// h("div", {class: "x"}, "text", child...): an HTML element; attributes set one by one, text as text nodes.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

// The same for SVG elements.
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  return fill(el, attrs, children);
}

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// A colour from green (0) through amber to red (1).
export function heat(t) {
  const x = Math.max(0, Math.min(1, Number.isFinite(t) ? t : 0));
  const stops = [[46, 158, 91], [230, 180, 34], [209, 52, 56]];
  const [a, b, u] = x < 0.5 ? [stops[0], stops[1], x * 2] : [stops[1], stops[2], (x - 0.5) * 2];
  const c = a.map((v, i) => Math.round(v + (b[i] - v) * u));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// A scale over observed values: t(v) in [0, 1]; a single value sits at 0. Error rates spread over decades (one
// broken coupler at 1.0 beside links at 0.005), so positive values spanning more than a decade scale by log.
export function scaleOf(values) {
  const finite = values.filter((v) => Number.isFinite(v));
  const lo = finite.length ? Math.min(...finite) : 0;
  const hi = finite.length ? Math.max(...finite) : 0;
  const log = lo > 0 && hi / lo > 10;
  const f = log ? Math.log : (v) => v;
  return { lo, hi, log, t: (v) => (hi > lo ? (f(Math.max(lo, v)) - f(lo)) / (f(hi) - f(lo)) : 0) };
}

export function fmt(value, digits = 3) {
  if (value === undefined || value === null || !Number.isFinite(Number(value))) return "–";
  const v = Number(value);
  if (v !== 0 && (Math.abs(v) < 10 ** -digits || Math.abs(v) >= 1e6)) return v.toExponential(2);
  return String(Number(v.toFixed(digits)));
}

// Counts as a histogram: one bar per outcome (the 48 most frequent when there are more), probabilities on y.
export function histogram(counts, { title = "", width = 420, height = 220, highlight = null } = {}) {
  const entries = Object.entries(counts || {});
  const total = entries.reduce((sum, [, n]) => sum + n, 0);
  let shown = entries;
  if (entries.length > 48) shown = [...entries].sort((a, b) => b[1] - a[1]).slice(0, 48);
  shown = [...shown].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const pad = { left: 40, right: 8, top: title ? 22 : 8, bottom: 44 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const max = Math.max(1e-9, ...shown.map(([, n]) => n / (total || 1)));
  const svg = s("svg", { class: "histogram", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": title || "counts" });
  if (title) svg.append(s("text", { x: pad.left, y: 15, class: "chart-title" }, title));
  for (const tick of [0, 0.5, 1]) {
    const y = pad.top + plotH - tick * plotH;
    svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
    svg.append(s("text", { x: pad.left - 4, y: y + 4, class: "axis", "text-anchor": "end" }, fmt(tick * max, 2)));
  }
  const slot = Math.min(64, plotW / Math.max(1, shown.length));
  const left = pad.left + (plotW - slot * shown.length) / 2; // few outcomes: narrow bars, centred
  shown.forEach(([outcome, n], i) => {
    const p = n / (total || 1);
    const barH = (p / max) * plotH;
    const x = left + i * slot + slot * 0.12;
    const bar = s("rect", { x, y: pad.top + plotH - barH, width: Math.max(1, slot * 0.76), height: barH,
      class: highlight === outcome ? "bar highlight" : "bar", "data-outcome": outcome, "data-count": n },
    s("title", {}, `${outcome}: ${n} (${fmt(p * 100, 1)}%)`));
    svg.append(bar);
    const lx = left + i * slot + slot / 2;
    const ly = pad.top + plotH + 12;
    const label = s("text", { x: lx, y: ly, class: "axis", "text-anchor": shown.length > 8 ? "end" : "middle",
      transform: shown.length > 8 ? `rotate(-60 ${lx} ${ly})` : null }, outcome);
    svg.append(label);
  });
  if (!shown.length) svg.append(s("text", { x: width / 2, y: height / 2, class: "axis", "text-anchor": "middle" },
    "no counts"));
  if (entries.length > shown.length) {
    svg.append(s("text", { x: width - pad.right, y: 15, class: "axis", "text-anchor": "end" },
      `${shown.length} of ${entries.length} outcomes`));
  }
  return svg;
}

// Horizontal bars: rows of {label, value, note}; values formatted with `unit`.
export function barChart(rows, { title = "", width = 420, unit = "", rowHeight = 22, max = null } = {}) {
  const pad = { left: 130, right: 70, top: title ? 24 : 6 };
  const height = pad.top + rows.length * rowHeight + 6;
  const top = max ?? Math.max(1e-12, ...rows.map((r) => Math.abs(r.value || 0)));
  const svg = s("svg", { class: "barchart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  if (title) svg.append(s("text", { x: 4, y: 15, class: "chart-title" }, title));
  rows.forEach((row, i) => {
    const y = pad.top + i * rowHeight;
    const w = ((width - pad.left - pad.right) * Math.abs(row.value || 0)) / top;
    svg.append(s("text", { x: pad.left - 6, y: y + rowHeight * 0.65, class: "axis", "text-anchor": "end" }, row.label));
    svg.append(s("rect", { x: pad.left, y: y + 3, width: Math.max(0, w), height: rowHeight - 8,
      class: row.muted ? "hbar muted" : "hbar" }, s("title", {}, `${row.label}: ${fmt(row.value, 4)}${unit}`)));
    svg.append(s("text", { x: pad.left + w + 4, y: y + rowHeight * 0.65, class: "axis" },
      `${fmt(row.value, 3)}${unit}${row.note ? " " + row.note : ""}`));
  });
  return svg;
}

// Layouts: qubit -> [x, y] in abstract units; the drawing scales them into the view box.

// Heavy-hex (IBM Eagle, Heron): rows are runs of consecutively numbered, linked qubits; the bridge qubits
// between two rows sit halfway, in the column of the row qubits they link. A row is aligned to the row above it
// through its bridges.
export function heavyHexLayout(n, edges) {
  const adjacent = neighbours(n, edges);
  const rows = [];
  let current = [0];
  for (let q = 1; q < n; q++) {
    if (adjacent[q].has(q - 1)) current.push(q);
    else { rows.push(current); current = [q]; }
  }
  rows.push(current);
  const lines = rows.filter((r) => r.length > 1);
  const bridges = rows.filter((r) => r.length === 1).map((r) => r[0]);
  const pos = new Map();
  let y = 0;
  let placed = [];
  for (const line of lines) {
    let offset = 0;
    // A bridge linking a placed qubit p and a qubit of this line at index i aligns them: offset = x(p) - i.
    for (const b of bridges) {
      const above = [...adjacent[b]].find((p) => placed.includes(p));
      const below = [...adjacent[b]].find((p) => line.includes(p));
      if (above !== undefined && below !== undefined) { offset = pos.get(above)[0] - line.indexOf(below); break; }
    }
    line.forEach((q, i) => pos.set(q, [offset + i, y]));
    placed = line;
    y += 2;
  }
  for (const b of bridges) {
    const linked = [...adjacent[b]].filter((p) => pos.has(p));
    if (!linked.length) continue;
    const xs = linked.map((p) => pos.get(p)[0]);
    const ys = linked.map((p) => pos.get(p)[1]);
    pos.set(b, [xs.reduce((a, v) => a + v, 0) / xs.length,
      linked.length > 1 ? ys.reduce((a, v) => a + v, 0) / ys.length : ys[0] + 1]);
  }
  return fillMissing(n, pos);
}

// Octagonal (Rigetti Aspen): qubits 8k..8k+7 form octagon k, numbered clockwise from the top right; octagons
// sit in a grid whose width is the step between vertically linked octagons.
export function octagonalLayout(n, edges) {
  const rings = Math.ceil(n / 8);
  let cols = rings;
  for (const [a, b] of edges) {
    const d = Math.abs(Math.floor(a / 8) - Math.floor(b / 8));
    if (d > 1 && d < cols) cols = d;
  }
  const pos = new Map();
  for (let q = 0; q < n; q++) {
    const ring = Math.floor(q / 8);
    const j = q % 8;
    const angle = ((-67.5 + 45 * j) * Math.PI) / 180;
    const cx = (ring % cols) * 3.2;
    const cy = Math.floor(ring / cols) * 3.2;
    pos.set(q, [cx + 1.3 * Math.cos(angle), cy + 1.3 * Math.sin(angle)]);
  }
  return pos;
}

// Any other graph (and all-to-all): qubits on a circle.
export function circleLayout(n) {
  const pos = new Map();
  for (let q = 0; q < n; q++) {
    const angle = (2 * Math.PI * q) / Math.max(1, n) - Math.PI / 2;
    pos.set(q, [Math.cos(angle) * 10, Math.sin(angle) * 10]);
  }
  return pos;
}

function neighbours(n, edges) {
  const adjacent = Array.from({ length: n }, () => new Set());
  for (const [a, b] of edges) {
    if (a < n && b < n) { adjacent[a].add(b); adjacent[b].add(a); }
  }
  return adjacent;
}

function fillMissing(n, pos) {
  let spare = 0;
  const maxY = Math.max(0, ...[...pos.values()].map((p) => p[1]));
  for (let q = 0; q < n; q++) if (!pos.has(q)) pos.set(q, [spare++, maxY + 2]);
  return pos;
}

// The coupling graph: one circle.qubit per qubit, one line.link per undirected pair, coloured by error.
// qubitError(q), linkError(a, b): numbers or undefined; `describe(q)` the qubit's tooltip.
export function topology({ n, edges, layout, qubitError, linkError, describe, width = 900 }) {
  const pos = layout === "heavy_hex" ? heavyHexLayout(n, edges)
    : layout === "octagonal" ? octagonalLayout(n, edges) : circleLayout(n);
  const xs = [...pos.values()].map((p) => p[0]);
  const ys = [...pos.values()].map((p) => p[1]);
  const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const spanX = Math.max(1, maxX - minX);
  const spanY = Math.max(1, maxY - minY);
  const unit = Math.min((width - 60) / spanX, layout === "heavy_hex" || layout === "octagonal" ? 40 : 26);
  const height = Math.max(120, spanY * unit + 60);
  const radius = layout === "heavy_hex" || layout === "octagonal" ? Math.max(4, Math.min(11, unit * 0.3)) : 10;
  const at = (q) => [30 + (pos.get(q)[0] - minX) * unit, 30 + (pos.get(q)[1] - minY) * unit];
  const qubitScale = scaleOf(Array.from({ length: n }, (_, q) => qubitError(q)));
  const pairs = uniquePairs(edges);
  const linkScale = scaleOf(pairs.map(([a, b]) => linkError(a, b)));
  const svg = s("svg", { id: "topology", class: "topology", viewBox: `0 0 ${width} ${height}`, width, height,
    role: "img", "aria-label": `coupling graph of ${n} qubits` });
  const links = s("g", { class: "links" });
  for (const [a, b] of pairs) {
    if (!pos.has(a) || !pos.has(b)) continue;
    const e = linkError(a, b);
    const [x1, y1] = at(a);
    const [x2, y2] = at(b);
    links.append(s("line", { x1, y1, x2, y2, class: "link", "data-link": `${a}-${b}`,
      stroke: Number.isFinite(e) ? heat(linkScale.t(e)) : "#8a94a6",
      "stroke-width": layout === "all_to_all" ? 0.6 : 3 },
    s("title", {}, `${a}–${b}: two-qubit error ${fmt(e, 4)}`)));
  }
  svg.append(links);
  const nodes = s("g", { class: "qubits" });
  for (let q = 0; q < n; q++) {
    const [cx, cy] = at(q);
    const e = qubitError(q);
    nodes.append(s("circle", { cx, cy, r: radius, class: "qubit", "data-qubit": q,
      fill: Number.isFinite(e) ? heat(qubitScale.t(e)) : "#8a94a6" }, s("title", {}, describe(q))));
    if (radius >= 8) {
      nodes.append(s("text", { x: cx, y: cy + 3, class: "qubit-label", "text-anchor": "middle" }, q));
    }
  }
  svg.append(nodes);
  return { svg, qubitScale, linkScale, links: pairs.length };
}

export function uniquePairs(edges) {
  const seen = new Set();
  const pairs = [];
  for (const [a, b] of edges) {
    const key = a < b ? `${a}-${b}` : `${b}-${a}`;
    if (a === b || seen.has(key)) continue;
    seen.add(key);
    pairs.push(a < b ? [a, b] : [b, a]);
  }
  return pairs;
}

// A legend strip from green to red with its two end values.
export function legend(label, scale, digits = 4) {
  const svg = s("svg", { class: "legend", viewBox: "0 0 260 34", width: 260, height: 34 });
  const steps = 20;
  for (let i = 0; i < steps; i++) {
    svg.append(s("rect", { x: 10 + i * 12, y: 14, width: 12, height: 8, fill: heat(i / (steps - 1)) }));
  }
  svg.append(s("text", { x: 10, y: 10, class: "axis" }, scale.log ? `${label} (log scale)` : label));
  svg.append(s("text", { x: 10, y: 33, class: "axis" }, fmt(scale.lo, digits)));
  svg.append(s("text", { x: 250, y: 33, class: "axis", "text-anchor": "end" }, fmt(scale.hi, digits)));
  return svg;
}
