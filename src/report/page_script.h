// The report page's script (docs/reports.md), kept as a raw string so that the binary carries it.
#pragma once
namespace blocklab {
inline constexpr const char* kReportScript = R"js(
// blocklab report page: plots (dygraphs), a summary table, and the raw metrics in a virtual table
// whose row offsets live in a Fenwick tree. Data: the JSON in <script id="data">.
"use strict";
const errors = [];
window.addEventListener("error", e => errors.push(String(e.message)));
const origError = console.error;
console.error = (...a) => { errors.push(a.join(" ")); origError(...a); };

// Prefix sums of row heights: add(i, delta) and sum(i) (rows < i) in O(log n); find(y): the row
// whose span [sum(i), sum(i+1)) holds offset y, by descending the tree's powers of two.
class Fenwick {
  constructor(heights) {
    this.n = heights.length;
    this.t = new Float64Array(this.n + 1);
    for (let i = 0; i < this.n; i++) {  // O(n) build
      this.t[i + 1] += heights[i];
      const j = (i + 1) + ((i + 1) & -(i + 1));
      if (j <= this.n) this.t[j] += this.t[i + 1];
    }
  }
  add(i, delta) { for (i++; i <= this.n; i += i & -i) this.t[i] += delta; }
  sum(i) { let s = 0; for (; i > 0; i -= i & -i) s += this.t[i]; return s; }
  total() { return this.sum(this.n); }
  find(y) {
    let pos = 0, step = 1;
    while (step * 2 <= this.n) step *= 2;
    for (; step > 0; step >>= 1)
      if (pos + step <= this.n && this.t[pos + step] <= y) { pos += step; y -= this.t[pos]; }
    return Math.min(pos, this.n - 1);
  }
}

const DATA = JSON.parse(document.getElementById("data").textContent);
const RUNS = DATA.runs;
const graphs = [];

function fmt(v) {
  if (typeof v !== "number") return v === undefined ? "" : String(v);
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(3) : v.toPrecision(4);
}

// One dygraph of `field` against `xField`, a series per run and block.
function plot(id, title, xField, field) {
  const series = [], points = new Map();
  RUNS.forEach((run, r) => {
    const blocks = [...new Set(run.metrics.map(m => m.block === undefined ? -1 : m.block))].sort((a, b) => a - b);
    blocks.forEach(b => {
      const k = series.length;
      series.push(run.name + (b < 0 ? "" : " block " + b));
      run.metrics.filter(m => (m.block === undefined ? -1 : m.block) === b && m[field] !== undefined).forEach(m => {
        if (!points.has(m[xField])) points.set(m[xField], []);
        points.get(m[xField])[k] = m[field];
      });
    });
  });
  const xs = [...points.keys()].sort((a, b) => a - b);
  const rows = xs.map(x => { const v = points.get(x); return [x, ...series.map((_, k) => v[k] === undefined ? null : v[k])]; });
  const el = document.getElementById(id);
  if (rows.length === 0) { el.textContent = title + ": nothing logged"; return; }
  const vals = rows.flatMap(r => r.slice(1)).filter(v => v !== null && v > 0);
  const logscale = vals.length > 0 && Math.max(...vals) / Math.min(...vals) > 100;
  graphs.push(new Dygraph(el, rows, {
    title, labels: [xField, ...series], logscale, connectSeparatedPoints: true, legend: "always",
    labelsSeparateLines: true, xlabel: xField, width: 560, height: 300, axes: { y: { axisLabelWidth: 70 } },
  }));
}

function summaryTable() {
  const keys = ["family", "mode", "blocks", "layers", "params", "steps", "train_seconds", "ms_per_step", "val_bpb",
                "peak_rss_bytes", "device", "threads", "blas", "commit"];
  const rows = [["", ...RUNS.map(r => r.name)]];
  const headline = h => !h ? "" : h.name + " " + (h.percent ? (100 * h.value).toFixed(2) + "%" : fmt(h.value));
  rows.push(["headline", ...RUNS.map(r => headline(r.summary.headline))]);
  keys.filter(k => RUNS.some(r => r.summary[k] !== undefined)).forEach(k => rows.push([k, ...RUNS.map(r => r.summary[k])]));
  const t = document.getElementById("summary");
  rows.forEach((cells, i) => {
    const tr = t.insertRow();
    cells.forEach((c, j) => {
      const td = tr.insertCell();
      let text = i === 0 || j === 0 ? String(c) : fmt(c);
      const first = rows[i][1];
      if (j > 1 && typeof c === "number" && typeof first === "number" && c !== first)
        text += " (" + (c - first > 0 ? "+" : "") + fmt(c - first) + ")";
      td.textContent = text;
    });
  });
}

// Generated text (the language models' judge-samples.txt), the start of it per run.
function samples() {
  const box = document.getElementById("samples");
  RUNS.filter(r => r.text_samples).forEach(r => {
    const h = document.createElement("h2");
    h.textContent = "Generated text: " + r.name;
    const pre = document.createElement("div");
    pre.className = "samples";
    pre.textContent = r.text_samples;
    box.append(h, pre);
  });
}

// The raw metrics: only the rows in view exist in the DOM; clicking a row shows its whole JSON.
const ROW = 22;
const table = { rows: [], fenwick: null, expanded: new Set() };
function metricsTable() {
  RUNS.forEach(run => run.metrics.forEach(m => table.rows.push([run.name, m])));
  table.fenwick = new Fenwick(table.rows.map(() => ROW));
  const view = document.getElementById("metrics"), space = document.getElementById("metrics-space");
  const scrub = document.getElementById("scrub");
  scrub.max = Math.max(0, table.rows.length - 1);
  const render = () => {
    space.style.height = table.fenwick.total() + "px";
    const top = view.scrollTop, bottom = top + view.clientHeight;
    const first = table.rows.length ? table.fenwick.find(top) : 0;
    space.replaceChildren();
    for (let i = first; i < table.rows.length && table.fenwick.sum(i) < bottom; i++) {
      const [name, m] = table.rows[i], open = table.expanded.has(i);
      const div = document.createElement("div");
      div.className = "row" + (open ? " open" : "");
      div.dataset.row = i;
      div.style.top = table.fenwick.sum(i) + "px";
      div.textContent = open ? name + " #" + i + "\n" + JSON.stringify(m, null, 2)
                             : "#" + i + "  " + name + "  step " + m.step + (m.block !== undefined ? "  block " + m.block : "") +
                               "  loss " + fmt(m.loss);
      div.onclick = () => {
        if (open) table.expanded.delete(i); else table.expanded.add(i);
        render();
        const el = space.querySelector('[data-row="' + i + '"]');
        const h = open ? ROW : el.scrollHeight;
        const old = table.fenwick.sum(i + 1) - table.fenwick.sum(i);
        if (h !== old) { table.fenwick.add(i, h - old); render(); }
      };
      space.appendChild(div);
    }
    if (document.activeElement !== scrub) scrub.value = first;
  };
  view.addEventListener("scroll", render);
  // The scrubber is a position, not a velocity: the row under the thumb is the row at the top.
  scrub.addEventListener("input", () => { view.scrollTop = table.fenwick.sum(Number(scrub.value)); render(); });
  table.render = render;
  table.scrollToRow = i => { view.scrollTop = table.fenwick.sum(i); render(); };
  render();
}

// Run with #selftest: checks the page in the browser and writes the results into <pre id="selftest">.
function selfTest() {
  const out = {};
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const heights = Array.from({ length: 3000 }, () => 1 + Math.floor(rand() * 60));
  const f = new Fenwick(heights);
  let ok = true;
  for (let trial = 0; trial < 3000 && ok; trial++) {
    const i = Math.floor(rand() * heights.length);
    if (trial % 2) { const d = Math.floor(rand() * 40) - 10; if (heights[i] + d > 0) { heights[i] += d; f.add(i, d); } }
    let s = 0; for (let j = 0; j < i; j++) s += heights[j];
    if (f.sum(i) !== s) ok = false;
    const y = rand() * f.total();
    let row = 0, acc = 0; while (acc + heights[row] <= y) acc += heights[row++];
    if (f.find(y) !== row) ok = false;
  }
  out.fenwick_matches_linear_scan = ok;
  out.plots = graphs.map(g => ({ title: g.getOption("title"), series: g.numColumns() - 1, points: g.numRows() }));
  out.rows = table.rows.length;
  const target = Math.min(50000, table.rows.length - 1);
  table.scrollToRow(target);
  const shown = [...document.querySelectorAll("#metrics-space .row")].map(d => Number(d.dataset.row));
  out.rendered_rows = shown.length;
  out.first_rendered_row = shown.length ? Math.min(...shown) : -1;
  out.target_row = target;
  out.sample_boxes = document.querySelectorAll("#samples .samples").length;
  out.errors = errors;
  document.getElementById("selftest").textContent = JSON.stringify(out);
}

plot("plot-loss", "loss against step", "step", "loss");
plot("plot-loss-time", "loss against training seconds", "seconds", "loss");
plot("plot-lr", "learning rate", "step", "lr");
plot("plot-grad", "gradient norm", "step", "grad_norm");
summaryTable();
samples();
metricsTable();
if (location.hash === "#selftest") selfTest();
)js";
}  // namespace blocklab
