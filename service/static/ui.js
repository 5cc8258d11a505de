// Headwise dashboard: plain JS, no build step. Data comes from the /v1 REST API with the key from
// sessionStorage in an Authorization header; live job progress is read from the SSE endpoint with fetch
// streaming (EventSource cannot send headers). Everything user-provided is inserted as text, never as HTML.
"use strict";

const KEY_STORE = "headwise.key";
// job statuses: from the server (service.domain.JobStatus, rendered into <body data-terminal-statuses>)
const TERMINAL = new Set(JSON.parse(document.body.dataset.terminalStatuses || "[]"));
const COLORS = ["#2563eb", "#e67e22", "#16a085", "#8e44ad", "#c0392b", "#7f8c8d", "#d4ac0d", "#1abc9c"];
const $ = (sel) => document.querySelector(sel);
const state = { datasets: [], jobs: [], models: [], job: null, stream: null, epochs: [], autoSpec: "", objectUrls: [] };

// ------------------------------------------------------------------------------------------------ helpers
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}
const fmt = (v) => (typeof v === "number" ? (Math.abs(v) >= 1000 || v === Math.round(v) ? String(v) : v.toPrecision(3)) : (v ?? "-"));
const when = (s) => (s ? String(s).slice(0, 19).replace("T", " ") : "");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const key = () => sessionStorage.getItem(KEY_STORE) || "";

let toastTimer = null;
function toast(message, kind = "error") {
  const t = $("#toast");
  t.textContent = message;
  t.className = kind;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 6000);
}

class ApiError extends Error {
  constructor(status, kind, detail) { super(`${status} ${kind}: ${detail}`); Object.assign(this, { status, kind, detail }); }
}
async function apiError(r) {
  let kind = `HTTP${r.status}`, detail = r.statusText;
  try { const b = await r.json(); kind = b.error || kind; detail = typeof b.detail === "string" ? b.detail : JSON.stringify(b.detail); } catch (_) { /* not JSON */ }
  return new ApiError(r.status, kind, detail);
}
class StaleError extends Error {}  // the answer belongs to a key no longer in use: dropped, never shown
async function api(path, opts = {}) {
  const used = key();
  const headers = Object.assign({ Authorization: `Bearer ${used}` }, opts.headers || {});
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (key() !== used) throw new StaleError("the key changed");
  if (r.status === 401) clearView();
  if (!r.ok) throw await apiError(r);
  if (opts.raw) return r;
  const text = await r.text();
  return text ? JSON.parse(text) : null;
}
async function guarded(fn) {
  try { return await fn(); } catch (e) {
    if (e instanceof StaleError) return undefined;
    toast(e.message || String(e)); console.error(e); return undefined;
  }
}
const items = (body) => (Array.isArray(body) ? body : (body && body.items) || []);
function fill(tbody, rows) { tbody.replaceChildren(...rows); }
function select(tbody, row) { for (const r of tbody.querySelectorAll("tr")) r.classList.toggle("selected", r === row); }
async function imageInto(img, path) {
  const r = await api(path, { raw: true });
  const url = URL.createObjectURL(await r.blob());
  state.objectUrls.push(url);
  img.src = url;
  img.hidden = false;
  await img.decode().catch(() => {});
}

// ---------------------------------------------------------------------------------------------------- key
async function checkKey() {
  const status = $("#key-status");
  if (!key()) { status.textContent = "no key"; status.className = "muted"; return false; }
  try {
    await api("/v1/models");
    status.textContent = "key ok"; status.className = "ok";
    return true;
  } catch (e) {
    status.textContent = e.status === 403 ? "key ok (limited scopes)" : `key rejected (${e.kind})`;
    status.className = e.status === 403 ? "muted" : "error";
    return e.status === 403;
  }
}

// Everything shown was fetched with one key: a new, forgotten or rejected (401) key clears it all, so nothing
// of the previous key's view (datasets, jobs, models, versions, predictions) stays on screen.
function clearView() {
  if (state.stream) state.stream.abort();
  Object.assign(state, { datasets: [], jobs: [], models: [], job: null, stream: null, epochs: [] });
  for (const url of state.objectUrls.splice(0)) URL.revokeObjectURL(url);
  for (const tbody of document.querySelectorAll("main table.list tbody")) tbody.replaceChildren();
  for (const id of ["#dataset-detail", "#job-detail", "#model-detail", "#version-detail", "#job-curves"]) $(id).hidden = true;
  for (const id of ["#audit-result", "#try-results", "#job-baselines", "#version-plots", "#evaluation-plots", "#model-aliases", "#job-dataset", "#try-model"]) {
    $(id).replaceChildren();
  }
  $("#try-version").replaceChildren(el("option", { value: "" }, "latest"));
  $("#job-curves").removeAttribute("src");
  for (const id of ["#job-spec", "#audit-spec"]) $(id).value = "";
  state.autoSpec = "";
  drawChart();
  document.dispatchEvent(new Event("headwise:cleared"));  // for the views in other files (spec form, comparison)
}

// ----------------------------------------------------------------------------------------------- datasets
function specFromColumns(columns) {
  const tasks = [];
  for (const [name, info] of Object.entries(columns || {})) {
    const type = { binary: "binary", categorical: "multiclass", numeric: "regression" }[info.kind];
    if (type) tasks.push({ name, type });
  }
  return { tasks, model: { image_size: 32, width: 16, depth: 2 }, training: { epochs: 5, batch_size: 32 } };
}
async function loadDatasets() {
  const body = await api("/v1/datasets?limit=200");
  state.datasets = items(body);
  fill($("#datasets-table tbody"), state.datasets.map((d) => {
    const row = el("tr", { class: "clickable", dataset: { id: d.id } },
      el("td", {}, d.name), el("td", { class: "mono" }, d.id), el("td", {}, d.format), el("td", {}, d.num_samples),
      el("td", {}, Object.keys(d.columns || {}).join(", ")), el("td", {}, when(d.created_at)));
    row.addEventListener("click", () => { select(row.parentNode, row); showDataset(d); });
    return row;
  }));
  const sel = $("#job-dataset");
  const current = sel.value;
  sel.replaceChildren(...state.datasets.map((d) => el("option", { value: d.id }, `${d.name} (${d.num_samples} samples)`)));
  if (current && state.datasets.some((d) => d.id === current)) sel.value = current;
  syncJobSpec();
}
function showDataset(d) {
  $("#dataset-detail").hidden = false;
  $("#dataset-title").textContent = `${d.name} · ${d.id}`;
  $("#dataset-detail").dataset.id = d.id;
  fill($("#dataset-columns tbody"), Object.entries(d.columns || {}).map(([c, info]) => el("tr", {},
    el("td", {}, c), el("td", {}, info.kind), el("td", {}, `${info.labelled} / ${d.num_samples}`),
    el("td", { class: "muted" }, (info.values || []).slice(0, 12).join(", ")))));
  $("#audit-spec").value = JSON.stringify(specFromColumns(d.columns), null, 2);
  $("#audit-result").replaceChildren();
}
function renderAudit(result) {
  const out = [];
  if (result.spec_errors && result.spec_errors.length) {
    out.push(el("p", { class: "error" }, "Spec errors:"), el("ul", {}, result.spec_errors.map((e) => el("li", { class: "error" }, e))));
  }
  const audit = result.audit || (result.tasks ? result : null);
  if (audit) {
    const rows = Object.entries(audit.tasks || {}).map(([t, a]) => el("tr", {},
      el("td", {}, t), el("td", {}, `${a.labelled} (${fmt((a.fraction || 0) * 100)}%)`),
      el("td", {}, a.class_counts ? Object.entries(a.class_counts).map(([c, n]) => `${c}: ${n}`).join(", ")
        : ["mean", "std", "min", "max"].filter((k) => k in a).map((k) => `${k} ${fmt(a[k])}`).join(", ")),
      el("td", { class: a.gate_violations ? "error" : "" }, a.gate_violations ?? 0)));
    out.push(el("table", { class: "list", id: "audit-table" },
      el("thead", {}, el("tr", {}, ["task", "labelled", "distribution", "gate violations"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)));
    for (const w of audit.warnings || []) out.push(el("p", { class: "muted" }, `⚠ ${w}`));
  }
  $("#audit-result").replaceChildren(...out);
}

// --------------------------------------------------------------------------------------------------- jobs
function syncJobSpec() {
  const d = state.datasets.find((x) => x.id === $("#job-dataset").value);
  const area = $("#job-spec");
  if (!d || (area.value.trim() && area.value !== state.autoSpec)) return;
  state.autoSpec = JSON.stringify(specFromColumns(d.columns), null, 2);
  area.value = state.autoSpec;
  area.dispatchEvent(new Event("input"));  // the spec form follows the JSON (spec_form.js)
}
async function loadJobs() {
  state.jobs = items(await api("/v1/jobs?limit=100"));
  fill($("#jobs-table tbody"), state.jobs.map((j) => {
    const p = j.progress || {};
    const row = el("tr", { class: "clickable", dataset: { id: j.id } },
      el("td", {}, el("span", { class: `badge ${j.status}` }, j.status)),
      el("td", {}, j.model ? `${j.model.name} v${j.model.version}` : j.model_name, j.compare ? el("span", { class: "badge" }, "comparison") : null),
      el("td", {}, `${p.epoch || 0}/${p.epochs ?? "?"}`), el("td", { class: "mono" }, j.id), el("td", {}, when(j.created_at)));
    if (state.job && state.job.id === j.id) row.classList.add("selected");
    row.addEventListener("click", () => { select(row.parentNode, row); showJob(j.id); });
    return row;
  }));
}
async function showJob(id) {
  if (state.stream) state.stream.abort();
  const job = await api(`/v1/jobs/${id}`);
  if (!state.job || state.job.id !== id) $("#job-curves").hidden = true;
  state.job = job;
  state.epochs = [];
  // a toast announces only a transition seen live: this view must have seen the job not yet finished
  state.sawActive = !TERMINAL.has(job.status);
  $("#job-detail").hidden = false;
  $("#job-title").textContent = `${job.model_name} · ${job.id}`;
  setJobStatus(job);
  drawChart();
  showComparison(job);  // compare_view.js: the report when the job has a compare block
  const ctrl = new AbortController();
  state.stream = ctrl;
  streamEvents(id, onJobEvent, ctrl.signal);
}
function setJobStatus(job) {
  const badge = $("#job-status");
  badge.textContent = job.status;
  badge.className = `badge ${job.status}`;
  $("#job-cancel").hidden = TERMINAL.has(job.status);
  const err = $("#job-error");
  err.hidden = !job.error;
  err.textContent = job.error || "";
  const p = job.progress || {};
  if (p.epochs) { $("#job-progress").max = p.epochs; $("#job-progress").value = p.epoch || 0; }
  renderBaselines($("#job-baselines"), job.metrics);
}
function onJobEvent(type, data) {
  const job = state.job;
  if (!job) return true;
  if (type === "epoch") {
    state.epochs = state.epochs.filter((e) => e.epoch !== data.epoch).concat([data]);
    const epochs = data.epochs || (job.progress || {}).epochs;
    $("#job-progress").max = epochs || 1;
    $("#job-progress").value = data.epoch;
    $("#live-epoch").textContent = `epoch ${data.epoch}/${epochs ?? "?"}`;
    const speed = [];
    if (typeof data.images_per_second === "number") speed.push(`${Math.round(data.images_per_second)} img/s`);
    if (typeof data.eta_seconds === "number") speed.push(`ETA ${Math.round(data.eta_seconds)} s`);
    $("#live-speed").textContent = speed.join(" · ");
    drawChart();
    renderHeads(data);
    return false;
  }
  if (type === "status") {
    comparisonEvent(type, data);
    if (!TERMINAL.has(data.status)) state.sawActive = true;
    Object.assign(job, { status: data.status, error: data.error, progress: data.progress || job.progress, metrics: data.metrics || job.metrics });
    setJobStatus(job);
    if (TERMINAL.has(data.status)) {
      loadJobs().catch(() => {});
      if (state.epochs.length) guarded(() => imageInto($("#job-curves"), `/v1/jobs/${job.id}/plots/curves.png`));
      if (data.status === "succeeded") loadModels().catch(() => {});
      if (state.sawActive) toast(`job ${job.id} ${data.status}`, data.status === "succeeded" ? "info" : "error");
      return true;
    }
  }
  return false;
}
function renderHeads(ev) {
  const tasks = Object.keys(Object.assign({}, ev.train || {}, ev.val || {}));
  fill($("#live-heads tbody"), tasks.map((t) => {
    const tr = (ev.train || {})[t] || {}, va = (ev.val || {})[t] || {};
    const metrics = Object.entries(va).filter(([k, v]) => !["loss", "labelled"].includes(k) && v !== null)
      .map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
    const lab = (ev.labelled || {})[t] || { train: tr.labelled, val: va.labelled };
    return el("tr", {}, el("td", {}, t), el("td", {}, fmt(tr.loss)), el("td", {}, fmt(va.loss)),
      el("td", {}, metrics), el("td", {}, `${lab.train ?? "-"} / ${lab.val ?? "-"}`), el("td", {}, fmt((ev.weights || {})[t])));
  }));
}
function drawChart() {
  const chart = $("#live-chart");
  const W = 640, H = 260, L = 48, R = 12, T = 12, B = 30;
  const pts = state.epochs.slice().sort((a, b) => a.epoch - b.epoch);
  chart.replaceChildren();
  chart.dataset.epochs = String(pts.length);
  const tasks = [];
  for (const e of pts) for (const t of Object.keys(Object.assign({}, e.train || {}, e.val || {}))) if (!tasks.includes(t)) tasks.push(t);
  const series = [];
  tasks.forEach((t, i) => {
    const color = COLORS[i % COLORS.length];
    series.push({ label: `${t} val`, color, dash: "", values: pts.map((e) => [e.epoch, ((e.val || {})[t] || {}).loss, e.run]) });
    series.push({ label: `${t} train`, color, dash: "4 3", values: pts.map((e) => [e.epoch, ((e.train || {})[t] || {}).loss, e.run]) });
  });
  const ys = series.flatMap((s) => s.values.map((v) => v[1])).filter((v) => typeof v === "number" && isFinite(v));
  const maxEpoch = Math.max(1, ...pts.map((e) => e.epoch), ...pts.map((e) => e.epochs || 0));
  let lo = ys.length ? Math.min(...ys) : 0, hi = ys.length ? Math.max(...ys) : 1;
  if (hi - lo < 1e-9) { hi += 0.5; lo = Math.max(0, lo - 0.5); }
  const x = (e) => L + ((e - 1) / Math.max(1, maxEpoch - 1)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  chart.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fff", stroke: "#dfe4ea" }));
  for (let k = 0; k <= 4; k++) {
    const v = lo + ((hi - lo) * k) / 4;
    chart.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#eef1f4" }));
    const label = svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#6b7785" });
    label.textContent = v.toPrecision(3);
    chart.append(label);
  }
  const step = Math.max(1, Math.ceil(maxEpoch / 10));
  for (let e = 1; e <= maxEpoch; e += step) {
    const label = svg("text", { x: x(e), y: H - B + 16, "text-anchor": "middle", "font-size": 10, fill: "#6b7785" });
    label.textContent = String(e);
    chart.append(label);
  }
  const xl = svg("text", { x: (L + W - R) / 2, y: H - 2, "text-anchor": "middle", "font-size": 11, fill: "#6b7785" });
  xl.textContent = pts.length ? "epoch · loss per head (solid: val, dashed: train)" : "waiting for the first epoch…";
  chart.append(xl);
  drawRuns(chart, pts, x, T, H - B);
  for (const s of series) {
    const good = s.values.filter((v) => typeof v[1] === "number" && isFinite(v[1]));
    // a comparison job's sub-runs (items carry "run") are separate curves: never joined across a boundary
    const segments = [];
    for (const v of good) {
      if (!segments.length || segments[segments.length - 1][0][2] !== v[2]) segments.push([]);
      segments[segments.length - 1].push(v);
    }
    for (const seg of segments) {
      chart.append(svg("polyline", { class: "series", points: seg.map((v) => `${x(v[0])},${y(v[1])}`).join(" "),
        fill: "none", stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash }));
    }
    for (const v of good) chart.append(svg("circle", { class: "pt", cx: x(v[0]), cy: y(v[1]), r: 2.5, fill: s.color }));
  }
  $("#live-legend").replaceChildren(...tasks.map((t, i) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = COLORS[i % COLORS.length]; // CSSOM, allowed by the page's CSP (no inline style attrs)
    return el("div", {}, swatch, t);
  }));
}

// A comparison job's sub-runs on one epoch axis: a dashed line before each new sub-run, its name (hover: <title>;
// written out where there is room). chart.dataset.runs counts them.
function drawRuns(chart, pts, x, top, bottom) {
  const starts = pts.filter((e, i) => e.run !== undefined && (i === 0 || pts[i - 1].run !== e.run));
  chart.dataset.runs = String(starts.length);
  starts.forEach((e, i) => {
    const at = i === 0 ? x(e.epoch) : (x(pts[pts.indexOf(e) - 1].epoch) + x(e.epoch)) / 2;
    const next = starts[i + 1] ? x(starts[i + 1].epoch) : x(pts[pts.length - 1].epoch) + 40;
    if (i > 0) chart.append(svg("line", { class: "run-start", x1: at, x2: at, y1: top, y2: bottom, stroke: "#9aa5b1", "stroke-dasharray": "2 3" }));
    const label = svg("text", { x: at + 3, y: top + 11, "font-size": 9, fill: "#6b7785" });
    label.textContent = next - at > 6 * String(e.run).length ? String(e.run) : "";
    const title = svg("title");
    title.textContent = `sub-run ${e.run}`;
    label.append(title);
    chart.append(label);
  });
}

// SSE over fetch streaming: the Authorization header can be sent (EventSource cannot). Reconnects with
// Last-Event-ID after a dropped connection; stops on the final status event or when aborted.
async function streamEvents(jobId, onEvent, signal) {
  let last = null;
  for (let attempt = 0; attempt < 30 && !signal.aborted; attempt++) {
    try {
      const headers = { Authorization: `Bearer ${key()}`, Accept: "text/event-stream" };
      if (last !== null) headers["Last-Event-ID"] = last;
      const r = await fetch(`/v1/jobs/${jobId}/events`, { headers, signal, cache: "no-store" });
      if (!r.ok) throw await apiError(r);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = "", ev = { event: "message", data: [], id: null };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          let line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.endsWith("\r")) line = line.slice(0, -1);
          if (line === "") {
            if (ev.data.length) {
              if (ev.id !== null) last = ev.id;
              let data;
              try { data = JSON.parse(ev.data.join("\n")); } catch (_) { data = ev.data.join("\n"); }
              if (onEvent(ev.event, data, ev.id)) { reader.cancel().catch(() => {}); return; }
            }
            ev = { event: "message", data: [], id: null };
            continue;
          }
          if (line.startsWith(":")) continue;
          const c = line.indexOf(":");
          const field = c < 0 ? line : line.slice(0, c);
          let val = c < 0 ? "" : line.slice(c + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "event") ev.event = val;
          else if (field === "data") ev.data.push(val);
          else if (field === "id") ev.id = val;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) { clearView(); toast(e.message); return; }
      if (e instanceof ApiError && e.status < 500) { toast(e.message); return; }
    }
    await sleep(1000);
  }
}

// ------------------------------------------------------------------------------------------------- models
async function loadModels() {
  state.models = items(await api("/v1/models"));
  fill($("#models-table tbody"), state.models.map((m) => {
    const row = el("tr", { class: "clickable", dataset: { name: m.name } },
      el("td", {}, m.name), el("td", {}, m.latest_version ?? "-"), el("td", {}, when(m.created_at)));
    row.addEventListener("click", () => { select(row.parentNode, row); guarded(() => showModel(m.name)); });
    return row;
  }));
  const sel = $("#try-model");
  const current = sel.value;
  sel.replaceChildren(...state.models.map((m) => el("option", { value: m.name }, m.name)));
  if (current && state.models.some((m) => m.name === current)) sel.value = current;
  await syncTryVersions();
}
// Engine metrics are {"val_loss", "tasks": {task: {metric: value}}}; flatten to [[name, value-or-object], ...].
function metricEntries(metrics) {
  const m = metrics || {};
  const tasks = m.tasks && typeof m.tasks === "object" ? m.tasks : {};
  return Object.entries(m).filter(([k]) => k !== "tasks" && k !== "baselines").concat(Object.entries(tasks));
}
// Each head's primary metric beside its trivial baseline (metrics.baselines); a head that does not beat it is flagged.
function baselineText(metrics, task) {
  const b = ((metrics || {}).baselines || {})[task];
  if (!b) return "";
  const verdict = b.beats_baseline === false ? "⚠ does not beat it" : b.beats_baseline ? "beats it" : "";
  return `${b.metric} ${fmt(b.value)} vs ${b.kind || "baseline"} ${fmt(b.baseline)} ${verdict}`.trim();
}
function renderBaselines(box, metrics) {
  const heads = Object.keys((metrics || {}).baselines || {});
  box.hidden = !heads.length;
  box.replaceChildren(...heads.map((t) => el("p", { class: metrics.baselines[t].beats_baseline === false ? "error" : "muted",
    dataset: { task: t, beats: String(metrics.baselines[t].beats_baseline) } }, `${t}: ${baselineText(metrics, t)}`)));
}
function metricSummary(metrics) {
  return metricEntries(metrics).map(([t, v]) => (v && typeof v === "object"
    ? `${t}: ${Object.entries(v).filter(([k, x]) => typeof x === "number" && k !== "labelled").slice(0, 3).map(([k, x]) => `${k} ${fmt(x)}`).join(", ")}`
    : `${t}: ${fmt(v)}`)).join(" · ");
}
async function showModel(name) {
  const model = await api(`/v1/models/${encodeURIComponent(name)}`);
  $("#model-detail").hidden = false;
  $("#version-detail").hidden = true;
  $("#model-title").textContent = name;
  renderAliases(name, model.aliases || []);
  const versions = (model.versions || []).slice().sort((a, b) => b.version - a.version);
  const button = (text, cls, fn) => el("button", { type: "button", class: cls, onclick: (e) => { e.stopPropagation(); guarded(fn); } }, text);
  fill($("#versions-table tbody"), versions.map((v) => {
    const row = el("tr", { class: "clickable", dataset: { version: v.version } },
      el("td", {}, `v${v.version}`), el("td", { class: "version-aliases" }, (v.aliases || []).join(", ")),
      el("td", { class: "muted" }, metricSummary(v.metrics)),
      el("td", { class: "mono" }, v.job_id), el("td", {}, when(v.created_at)),
      el("td", {}, button("Try it", "secondary", () => tryVersion(name, v.version)), " ",
        button("Promote", "secondary promote", () => promote(name, v.version))));
    row.addEventListener("click", () => { select(row.parentNode, row); guarded(() => showVersion(name, v)); });
    return row;
  }));
}
// Aliases: one line per alias with its Roll back button; Promote (per version) moves the alias typed above.
function renderAliases(name, aliases) {
  const box = $("#model-aliases");
  if (!aliases.length) { box.replaceChildren(el("p", { class: "muted" }, "no aliases")); return; }
  box.replaceChildren(...aliases.map((a) => el("p", { class: "alias", dataset: { alias: a.alias } },
    el("strong", {}, a.alias), ` → v${a.version} `,
    el("button", { type: "button", class: "secondary rollback", onclick: () => guarded(() => rollback(name, a.alias)) }, "Roll back"))));
}
const aliasPath = (name, alias) => `/v1/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}`;
async function promote(name, version) {
  const alias = $("#promote-alias").value.trim();
  const ev = await api(aliasPath(name, alias), { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ version }) });
  toast(`${alias}: ${ev.from_version ? `v${ev.from_version}` : "new"} → v${ev.to_version}`, "info");
  await showModel(name);
}
async function rollback(name, alias) {
  const ev = await api(`${aliasPath(name, alias)}/rollback`, { method: "POST" });
  toast(`${alias}: v${ev.from_version} → v${ev.to_version} (rolled back)`, "info");
  await showModel(name);
}
async function showVersion(name, v) {
  $("#version-detail").hidden = false;
  $("#version-title").textContent = `${name} v${v.version}`;
  fill($("#version-metrics tbody"), metricEntries(v.metrics).map(([t, m]) => el("tr", {}, el("td", {}, t),
    el("td", {}, m && typeof m === "object" ? Object.entries(m).map(([k, x]) => `${k} ${fmt(x)}`).join(", ") : fmt(m)),
    el("td", { class: baselineText(v.metrics, t).includes("⚠") ? "error" : "muted" }, baselineText(v.metrics, t)))));
  const plots = $("#version-plots");
  const tasks = ((v.spec || {}).tasks || []).map((t) => t.name);
  const figures = tasks.map((t) => {
    const img = el("img", { class: "plot", alt: `${t} plot`, hidden: true, dataset: { task: t } });
    return { t, img, fig: el("figure", {}, img, el("figcaption", {}, t)) };
  });
  plots.replaceChildren(...figures.map((f) => f.fig));
  showEvaluations(name, v).catch((e) => $("#evaluation-plots").replaceChildren(el("p", { class: "error" }, e.message)));
  for (const f of figures) {
    await imageInto(f.img, `/v1/models/${encodeURIComponent(name)}/versions/${v.version}/plots/${encodeURIComponent(f.t)}.png`)
      .catch((e) => f.fig.append(el("p", { class: "error" }, e.message)));
  }
}

// Evaluations of this version (POST .../evaluations, `headwise evaluate`): one row per head; the newest succeeded
// one's plots below. Gated heads: plain metrics given the true gate, e2e_* end to end.
async function showEvaluations(name, v) {
  const base = `/v1/models/${encodeURIComponent(name)}/versions/${v.version}/evaluations`;
  const items = ((await api(base)) || {}).items || [];
  fill($("#version-evaluations tbody"), items.flatMap((e) => Object.entries(e.heads || { "-": {} }).map(([t, m]) =>
    el("tr", { dataset: { evaluation: e.id } }, el("td", {}, when(e.created_at)), el("td", {}, e.dataset_id || "upload"),
      el("td", {}, e.status), el("td", {}, t), el("td", {}, m.labelled ?? "-"),
      el("td", {}, Object.entries(m).filter(([k]) => k !== "labelled").map(([k, x]) => `${k} ${fmt(x)}`).join(", "))))));
  const done = items.find((e) => e.status === "succeeded");
  const plots = $("#evaluation-plots");
  plots.replaceChildren();
  for (const [t, path] of Object.entries((done && done.plots) || {})) {
    const img = el("img", { class: "plot", alt: `${t} evaluation plot`, hidden: true, dataset: { task: t } });
    plots.append(el("figure", {}, img, el("figcaption", {}, `${t} (evaluation)`)));
    await imageInto(img, path).catch((e) => plots.append(el("p", { class: "error" }, e.message)));
  }
}

// ------------------------------------------------------------------------------------------------- try it
async function syncTryVersions() {
  const name = $("#try-model").value;
  const sel = $("#try-version");
  sel.replaceChildren(el("option", { value: "" }, "latest"));
  if (!name) return;
  const model = await api(`/v1/models/${encodeURIComponent(name)}`);
  for (const v of (model.versions || []).slice().sort((a, b) => b.version - a.version)) {
    sel.append(el("option", { value: v.version }, `v${v.version}`));
  }
}
async function tryVersion(name, version) {
  activate("try", false);
  await loadModels();
  $("#try-model").value = name;
  await syncTryVersions();
  $("#try-version").value = String(version);
}
function outputCell(out) {
  if (!out || typeof out !== "object") return el("td", {}, fmt(out));
  if (out.gated) {
    return el("td", { class: "gated" }, el("span", { class: "badge suppressed" }, "suppressed"), " ",
      el("span", { class: "muted reason" }, out.reason || "gate negative"));
  }
  if (out.probabilities && typeof out.probabilities === "object") {
    const top = Object.entries(out.probabilities).sort((a, b) => b[1] - a[1]).slice(0, 3);
    return el("td", {}, el("strong", {}, String(out.label)), " ",
      el("span", { class: "muted" }, top.map(([c, p]) => `${c} ${(p * 100).toFixed(0)}%`).join(", ")));
  }
  if ("probability" in out) return el("td", {}, el("strong", {}, String(out.label)), ` (p=${fmt(out.probability)})`);
  if ("value" in out) return el("td", {}, el("strong", {}, fmt(out.value)));
  return el("td", { class: "mono" }, JSON.stringify(out));
}
async function predict(ev) {
  ev.preventDefault();
  const files = Array.from($("#try-file").files || []);
  if (!files.length) { toast("choose one or more images"); return; }
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const name = $("#try-model").value;
  const version = $("#try-version").value;
  const qs = version ? `?version=${encodeURIComponent(version)}` : "";
  const body = await api(`/v1/models/${encodeURIComponent(name)}/predict${qs}`, { method: "POST", body: form });
  const preds = body.predictions || [];
  const tasks = [];
  for (const p of preds) for (const t of Object.keys(p)) if (!tasks.includes(t)) tasks.push(t);
  const rows = preds.map((p, i) => {
    const url = URL.createObjectURL(files[i]);
    state.objectUrls.push(url);
    return el("tr", {}, el("td", {}, el("img", { class: "preview", src: url, alt: files[i].name }), el("div", { class: "muted" }, files[i].name)),
      tasks.map((t) => outputCell(p[t])));
  });
  $("#try-results").replaceChildren(
    el("p", {}, `model ${body.model.name} v${body.model.version}`),
    el("table", { class: "list", id: "prediction-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "image"), tasks.map((t) => el("th", {}, t)))), el("tbody", {}, rows)));
}

// ----------------------------------------------------------------------------------------------- wiring
const loaders = { datasets: loadDatasets, jobs: async () => { loadCapabilities().catch(() => {}); await loadDatasets(); await loadJobs(); }, models: loadModels, try: loadModels };
function activate(tab, load = true) {
  for (const b of document.querySelectorAll("nav .tab")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const s of document.querySelectorAll("main .panel")) s.hidden = s.id !== `tab-${tab}`;
  if (load && key() && loaders[tab]) return guarded(loaders[tab]);
  return Promise.resolve();
}
function currentTab() { return (document.querySelector("nav .tab.active") || {}).dataset?.tab || "datasets"; }

document.addEventListener("DOMContentLoaded", () => {
  $("#key-input").value = key();
  $("#key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const next = $("#key-input").value.trim();
    if (next !== key()) clearView();
    sessionStorage.setItem(KEY_STORE, next);
    if (await checkKey()) activate(currentTab());
  });
  $("#key-forget").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); $("#key-input").value = ""; clearView(); checkKey(); });
  for (const b of document.querySelectorAll("nav .tab")) b.addEventListener("click", () => activate(b.dataset.tab));
  $("#upload-form").addEventListener("submit", (e) => { e.preventDefault(); guarded(async () => {
    const form = new FormData();
    form.append("file", $("#upload-file").files[0]);
    if ($("#upload-name").value.trim()) form.append("name", $("#upload-name").value.trim());
    $("#upload-btn").disabled = true;
    try {
      const d = await api("/v1/datasets", { method: "POST", body: form });
      toast(`uploaded ${d.name} (${d.num_samples} samples)`, "info");
      await loadDatasets();
      showDataset(d);
    } finally { $("#upload-btn").disabled = false; }
  }); });
  $("#audit-btn").addEventListener("click", () => guarded(async () => {
    const id = $("#dataset-detail").dataset.id;
    const spec = JSON.parse($("#audit-spec").value);
    renderAudit(await api(`/v1/datasets/${id}/audit`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ spec }) }));
  }));
  $("#dataset-train").addEventListener("click", () => guarded(async () => {
    const id = $("#dataset-detail").dataset.id;
    const spec = $("#audit-spec").value;
    await activate("jobs");
    $("#job-dataset").value = id;
    $("#job-spec").value = spec;
    $("#job-spec").dispatchEvent(new Event("input"));
  }));
  $("#job-dataset").addEventListener("change", syncJobSpec);
  $("#job-form").addEventListener("submit", (e) => { e.preventDefault(); guarded(async () => {
    const spec = JSON.parse($("#job-spec").value);
    const body = { dataset_id: $("#job-dataset").value, model_name: $("#job-model").value.trim(), spec };
    const compare = compareBlock();  // compare_view.js
    if (compare) body.compare = compare;
    const job = await api("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    toast(`job ${job.id} ${job.status}`, "info");
    await loadJobs();
    await showJob(job.id);
  }); });
  $("#job-cancel").addEventListener("click", () => guarded(async () => {
    if (!state.job) return;
    await api(`/v1/jobs/${state.job.id}/cancel`, { method: "POST" });
    toast("cancel requested", "info");
  }));
  $("#try-model").addEventListener("change", () => guarded(syncTryVersions));
  $("#try-form").addEventListener("submit", (e) => guarded(() => predict(e)));
  setInterval(() => { if (key() && currentTab() === "jobs" && state.jobs.some((j) => !TERMINAL.has(j.status))) loadJobs().catch(() => {}); }, 4000);
  checkKey().then((ok) => { if (ok) activate(currentTab()); });
});
