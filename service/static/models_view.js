// The Models and Try it tabs: models, versions (metrics beside their trivial baselines, plots, evaluations),
// aliases (promote, roll back) and predictions on uploaded images.
// Uses $/el/api/fmt/when/fill/select/guarded/imageInto/toast/activate/state from ui.js (loaded first).
"use strict";

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
      el("td", { class: "version-parent muted" }, v.parent ? `${v.parent.name} v${v.parent.version}` : ""),
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
