// The report page's script (docs/reports.md), kept as a raw string so that the binary carries it.
#pragma once
namespace blocklab {
inline constexpr const char* kReportScript = R"js(
// blocklab report page: plots (dygraphs), a summary table, what the runs made (text, images,
// confusion matrices), profiles, and the raw metrics in a virtual table whose row offsets live in
// a Fenwick tree. Data: the JSON in <script id="data">.
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

// A dygraph of `series` ([{label, points: [[x, y], ...]}]) in element `el`; log scale when the
// values span more than two decades.
function drawPlot(el, title, xlabel, series) {
  const points = new Map();
  series.forEach((s, k) => s.points.forEach(([x, y]) => {
    if (!points.has(x)) points.set(x, []);
    points.get(x)[k] = y;
  }));
  const xs = [...points.keys()].sort((a, b) => a - b);
  const rows = xs.map(x => { const v = points.get(x); return [x, ...series.map((_, k) => v[k] === undefined ? null : v[k])]; });
  if (rows.length === 0) { el.textContent = title + ": nothing logged"; return; }
  const vals = rows.flatMap(r => r.slice(1)).filter(v => v !== null && v > 0);
  const logscale = vals.length > 0 && Math.max(...vals) / Math.min(...vals) > 100;
  graphs.push(new Dygraph(el, rows, {
    title, labels: [xlabel, ...series.map(s => s.label)], logscale, connectSeparatedPoints: true, legend: "always",
    labelsSeparateLines: true, xlabel, width: 560, height: 300, axes: { y: { axisLabelWidth: 70 } },
    drawPoints: rows.length < 60,
  }));
}

// `field` of the training lines against `xField`, a series per run and block.
function plot(id, title, xField, field) {
  const series = [];
  RUNS.forEach(run => {
    const lines = run.metrics.filter(m => m[field] !== undefined && m[xField] !== undefined);
    const blockOf = m => m.block === undefined ? -1 : m.block;
    [...new Set(lines.map(blockOf))].sort((a, b) => a - b).forEach(b => series.push({
      label: run.name + (b < 0 ? "" : " block " + b),
      points: lines.filter(m => blockOf(m) === b).map(m => [m[xField], m[field]]),
    }));
  });
  drawPlot(document.getElementById(id), title, xField, series);
}

// Evaluations (train.eval_every, and the one at the end): a plot per headline metric, a series
// per run and figure (the headline and the family's alternatives).
function evaluationPlots() {
  const byHeadline = new Map();
  RUNS.forEach(run => run.metrics.filter(m => m.evaluation).forEach(m => {
    const headline = m.headline || Object.keys(m.evaluation)[0];
    if (!byHeadline.has(headline)) byHeadline.set(headline, new Map());
    const series = byHeadline.get(headline);
    Object.entries(m.evaluation).forEach(([name, value]) => {
      const label = run.name + (name === headline ? "" : ": " + name);
      if (!series.has(label)) series.set(label, { label, points: [] });
      series.get(label).points.push([m.step, value]);
    });
  }));
  if (byHeadline.size === 0) return;
  const box = document.getElementById("evaluations");
  const h = document.createElement("h2");
  h.textContent = "Evaluation";
  const plots = document.createElement("div");
  plots.className = "plots";
  box.append(h, plots);
  byHeadline.forEach((series, headline) => {
    const el = document.createElement("div");
    plots.appendChild(el);
    drawPlot(el, headline + " against step", "step", [...series.values()]);
  });
}

// A table whose columns sort by a click on their header (again: the other way).
// columns: [{key, label, show?, text?}] (text: left-aligned); rows: objects.
function sortableTable(columns, rows) {
  const t = document.createElement("table");
  t.className = "sortable";
  const head = t.createTHead().insertRow(), body = t.createTBody();
  let sortKey = null, descending = true;
  const render = () => {
    const sorted = sortKey === null ? rows : [...rows].sort((a, b) => {
      const x = a[sortKey], y = b[sortKey];
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x ?? "").localeCompare(String(y ?? ""));
      return descending ? -c : c;
    });
    body.replaceChildren();
    sorted.forEach(r => {
      const tr = body.insertRow();
      columns.forEach(c => {
        const td = tr.insertCell();
        td.textContent = c.show ? c.show(r[c.key], r) : fmt(r[c.key]);
        if (c.text) td.className = "text";
      });
    });
  };
  columns.forEach(c => {
    const th = document.createElement("th");
    th.textContent = c.label;
    th.dataset.key = c.key;
    th.title = "sort";
    th.onclick = () => {
      descending = sortKey === c.key ? !descending : true;
      sortKey = c.key;
      head.querySelectorAll("th").forEach(x => x.className = x === th ? (descending ? "down" : "up") : "");
      render();
    };
    head.appendChild(th);
  });
  render();
  return t;
}

function element(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className) e.className = className;
  return e;
}

function summaryTable() {
  const keys = ["family", "mode", "blocks", "layers", "params", "steps", "train_seconds", "ms_per_step", "val_bpb",
                "peak_rss_bytes", "device", "threads", "blas", "commit"];
  const rows = [["", ...RUNS.map(r => r.name)]];
  const headline = h => !h ? "" : h.name + " " + (h.percent ? (100 * h.value).toFixed(2) + "%" : fmt(h.value));
  rows.push(["headline", ...RUNS.map(r => headline(r.summary.headline))]);
  keys.filter(k => RUNS.some(r => r.summary[k] !== undefined)).forEach(k => rows.push([k, ...RUNS.map(r => r.summary[k])]));
  // The family's own figures: alternatives to the headline, accuracy after each inference step
  // and each block's teacher-forced accuracy (classifier), FD's floor and extrapolation (DiT).
  const named = new Map();
  const add = (label, r, v) => { if (!named.has(label)) named.set(label, []); named.get(label)[r] = v; };
  RUNS.forEach((run, r) => {
    const s = run.summary;
    (s.alternatives || []).forEach(m => add(m.name + (m.percent ? " (%)" : ""), r, m.percent ? 100 * m.value : m.value));
    (s.inference_steps || []).forEach((st, i) => add("% after step " + (i + 1) + " (block " + st.block + ")", r, 100 * st.accuracy));
    (s.teacher_forced || []).forEach(t => add("% teacher-forced, block " + t.block, r, 100 * t.accuracy));
    ["fd_floor", "fd_infinity", "accuracy"].forEach(k => { if (typeof s[k] === "number") add(k, r, s[k]); });
  });
  named.forEach((values, label) => rows.push([label, ...RUNS.map((_, r) => values[r])]));
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

// What the runs made: generated text, images (sample grids) and the classifier's confusion matrix.
function made() {
  const box = document.getElementById("made");
  RUNS.forEach(run => {
    run.texts.forEach(t => {
      box.append(element("h2", "Generated text: " + run.name + " (" + t.file + ")"), element("div", t.text, "samples"));
    });
    run.images.forEach(im => {
      box.appendChild(element("h2", "Images: " + run.name + " (" + im.file + ")"));
      if (!im.src) { box.appendChild(element("p", im.file + ": " + im.bytes + " bytes, too big to inline; it is in the run directory")); return; }
      const img = document.createElement("img");
      img.src = im.src;
      img.alt = run.name + " " + im.file;
      img.className = "figure";
      box.appendChild(img);
    });
    const c = run.summary.confusion;
    if (c) {
      box.append(element("h2", "Confusion matrix: " + run.name),
                 element("p", "Rows: the true class; columns: the predicted one; colour: the share of the row."));
      box.appendChild(confusionTable(c));
    }
  });
}

function confusionTable(counts) {
  const t = element("table", undefined, "confusion");
  const head = t.insertRow();
  head.insertCell().textContent = "true \\ predicted";
  counts.forEach((_, k) => head.insertCell().textContent = k);
  head.insertCell().textContent = "recall";
  counts.forEach((row, i) => {
    const tr = t.insertRow(), total = row.reduce((a, b) => a + b, 0);
    tr.insertCell().textContent = i;
    row.forEach((n, j) => {
      const td = tr.insertCell(), share = total ? n / total : 0;
      td.textContent = n;
      td.className = "cell";
      td.style.background = (i === j ? "rgba(40,140,60," : "rgba(200,40,40,") + Math.min(1, i === j ? share : 4 * share).toFixed(3) + ")";
      td.title = (100 * share).toFixed(1) + "% of class " + i;
    });
    tr.insertCell().textContent = total ? (100 * row[i] / total).toFixed(1) + "%" : "";
  });
  return t;
}

// Profiles (`blocklab profile`): the step's phases and the op table, both sortable.
function profiles() {
  const box = document.getElementById("profiles");
  DATA.profiles.forEach(p => {
    box.appendChild(element("h2", "Profile: " + (p.run ? p.run + " / " : "") + p.dir.split("/").pop() + " (" + p.family + ", " + p.mode + ")"));
    const per = p.steps ? fmt(p.wall_ms / p.steps) : "?";
    box.appendChild(element("p", p.steps + " profiled steps, " + fmt(p.wall_ms) + " ms (" + per + " ms/step) by the " + p.clock +
                                 ", batch " + p.batch_size + ", " + p.threads + " thread(s), device " + p.device + ", BLAS " + p.blas_core +
                                 (p.commit ? ", commit " + p.commit : "") + "."));
    (p.mfu || []).forEach(u => box.appendChild(element("p", "Model FLOP utilization, " + u.what + ": " + fmt(u.gflops) + " GFLOP/s" +
      (u.mfu > 0 ? ", " + (100 * u.mfu).toFixed(1) + "% of the FMA roof, " + (100 * u.mfu_vs_gemm_peak).toFixed(1) + "% of the GEMM peak" : ""))));
    const wall = p.wall_ms || 1;
    box.appendChild(element("h3", "Phases of a step"));
    box.appendChild(sortableTable([
      { key: "name", label: "phase", show: v => v, text: true }, { key: "calls", label: "calls" }, { key: "total_ms", label: "total ms" },
      { key: "share", label: "share %", show: v => v.toFixed(1) }, { key: "host_ms", label: "host ms (outside ops)" },
      { key: "gflops", label: "GFLOP/s" }], (p.phases || []).map(ph => ({ ...ph, share: 100 * ph.total_ms / wall }))));
    box.appendChild(element("h3", "Ops by self time" + (p.total_ops > p.ops.length ? " (the first " + p.ops.length + " of " + p.total_ops + "; all in ops.json)" : "")));
    box.appendChild(sortableTable([
      { key: "self_ms", label: "self ms" }, { key: "self_share", label: "self %", show: v => v.toFixed(2) },
      { key: "total_ms", label: "total ms" }, { key: "calls", label: "calls" },
      { key: "gflop", label: "GFLOP", show: v => v ? v.toFixed(3) : "" }, { key: "gflops", label: "GFLOP/s", show: v => v ? fmt(v) : "" },
      { key: "peak_share", label: "% of peak", show: v => v ? (100 * v).toFixed(1) : "" },
      { key: "name", label: "op (ranges: host time outside ops)", show: (v, r) => r.kind === "op" ? v : "<" + v + "> host", text: true },
      { key: "shapes", label: "input shapes", show: v => v, text: true }],
      p.ops.map(o => ({ ...o, self_share: 100 * o.self_ms / wall, gflop: o.flops / 1e9 }))));
    box.appendChild(element("p", "The timeline: open " + p.trace + " in Perfetto (https://ui.perfetto.dev, drag the file onto the page; " +
                                 "the trace stays in the browser) or, offline, in Chromium's chrome://tracing."));
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
      const what = m.evaluation ? "  evaluation: " + Object.entries(m.evaluation).map(([k, v]) => k + " " + fmt(v)).join(", ")
                                : (m.block !== undefined ? "  block " + m.block : "") + "  loss " + fmt(m.loss);
      div.textContent = open ? name + " #" + i + "\n" + JSON.stringify(m, null, 2) : "#" + i + "  " + name + "  step " + m.step + what;
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
  out.sample_boxes = document.querySelectorAll("#made .samples").length;
  out.images = [...document.querySelectorAll("#made img")].map(i => ({ alt: i.alt, width: i.naturalWidth, height: i.naturalHeight }));
  out.confusion_cells = document.querySelectorAll("table.confusion td.cell").length;
  // The op table sorts by a clicked column, largest first, then the other way.
  const opTable = document.querySelectorAll("#profiles table.sortable")[1];
  out.op_rows = opTable ? opTable.tBodies[0].rows.length : 0;
  if (opTable) {
    const th = [...opTable.tHead.rows[0].cells].find(c => c.dataset.key === "calls"), col = th.cellIndex;
    const column = () => [...opTable.tBodies[0].rows].map(r => Number(r.cells[col].textContent));
    const sorted = (v, down) => v.every((x, i) => i === 0 || (down ? v[i - 1] >= x : v[i - 1] <= x));
    th.click();
    const down = sorted(column(), true);
    th.click();
    out.op_table_sorts = down && sorted(column(), false);
  }
  out.errors = errors;
  document.getElementById("selftest").textContent = JSON.stringify(out);
}

plot("plot-loss", "loss against step", "step", "loss");
plot("plot-loss-time", "loss against training seconds", "seconds", "loss");
plot("plot-lr", "learning rate", "step", "lr");
plot("plot-grad", "gradient norm", "step", "grad_norm");
evaluationPlots();
summaryTable();
made();
profiles();
metricsTable();
// After the images have decoded.
if (location.hash === "#selftest") window.addEventListener("load", selfTest);
)js";
}  // namespace blocklab
