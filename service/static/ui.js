// Headwise dashboard: plain JS, no build step. Data comes from the /v1 REST API with the key from
// sessionStorage in an Authorization header; live job progress is read from the SSE endpoint with fetch
// streaming (EventSource cannot send headers). Everything user-provided is inserted as text, never as HTML.
// This file: helpers, the key, the Datasets and Jobs tabs and the wiring; the other views, loaded after it as
// plain scripts sharing its globals: live_chart.js, models_view.js (Models, Try it), spec_form.js, compare_view.js.
"use strict";

const KEY_STORE = "headwise.key";
// job statuses: from the server (service.domain.JobStatus, rendered into <body data-terminal-statuses>)
const TERMINAL = new Set(JSON.parse(document.body.dataset.terminalStatuses || "[]"));
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

// ----------------------------------------------------------------------------------------------- wiring
// (functions of the later scripts are looked up when called: they are not defined yet while this file runs)
const loaders = { datasets: loadDatasets, jobs: async () => { loadCapabilities().catch(() => {}); await loadDatasets(); await loadJobs(); },
  models: () => loadModels(), try: () => loadModels() };
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
