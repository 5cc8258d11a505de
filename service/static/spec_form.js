// The spec builder next to the JSON editor (Jobs tab): heads (name, column, type, classes, loss, weight, gate),
// the weighting strategy with its parameters and the key training settings. The choices come from
// GET /v1/capabilities (head types, their losses, gating, weighting strategies), never from a copy here.
// The JSON is the source of truth: a form edit rewrites only the fields the form owns and keeps everything else
// (loss parameters, augmentation, ...); a JSON edit that parses redraws the form; one that does not shows the
// parse error and disables the form until the JSON is fixed (the form keeps the last valid spec).
// Uses el/api/$/state from ui.js (loaded first).
"use strict";

const specForm = { caps: null, spec: {}, loading: null };
const KEEP = "__keep";  // a loss the form cannot show (a list of losses): left as it is

const splitList = (text) => String(text || "").split(",").map((s) => s.trim()).filter(Boolean);
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
function numberOrText(text) {  // "" -> undefined (the server's default), "12" -> 12, "auto" -> "auto"
  const t = String(text).trim();
  if (!t) return undefined;
  return t !== "" && Number.isFinite(Number(t)) ? Number(t) : t;
}
function setOrDelete(obj, k, v) { if (v === undefined || v === "" || v === null) delete obj[k]; else obj[k] = v; }
const lossName = (loss) => (typeof loss === "string" ? loss : isObject(loss) ? loss.type : Array.isArray(loss) ? KEEP : "");

async function loadCapabilities() {
  if (specForm.caps) return specForm.caps;
  if (!specForm.loading) {
    specForm.loading = api("/v1/capabilities").then((caps) => {
      specForm.caps = caps;
      renderSpecForm();
      document.dispatchEvent(new CustomEvent("headwise:capabilities", { detail: caps }));  // compare_view.js
      return caps;
    }).catch((e) => {
      $("#spec-builder-status").textContent = `(capabilities: ${e.message})`;
      throw e;
    }).finally(() => { specForm.loading = null; });
  }
  return specForm.loading;
}

// ---------------------------------------------------------------------------------------------- JSON -> form
function onSpecText() {
  const text = $("#job-spec").value;
  const error = $("#spec-error");
  let parsed;
  try {
    parsed = text.trim() ? JSON.parse(text) : {};
    if (!isObject(parsed)) throw new Error("the spec must be a JSON object");
  } catch (e) {
    error.textContent = `JSON: ${e.message} — the form keeps the last valid spec; fix the JSON to edit with the form`;
    error.hidden = false;
    $("#job-spec").classList.add("invalid");
    $("#spec-builder").disabled = true;
    return;
  }
  error.hidden = true;
  $("#job-spec").classList.remove("invalid");
  specForm.spec = parsed;
  renderSpecForm();
}

function option(value, label, selected) { return el("option", { value, selected: selected || null }, label); }

function renderSpecForm() {
  const caps = specForm.caps;
  const builder = $("#spec-builder");
  if (!caps) { builder.disabled = true; return; }
  builder.disabled = !$("#spec-error").hidden;
  $("#spec-builder-status").textContent = "";
  const spec = specForm.spec;
  const tasks = Array.isArray(spec.tasks) ? spec.tasks : [];
  $("#spec-heads").replaceChildren(...tasks.map((t, i) => headRow(isObject(t) ? t : {}, i)));
  const weighting = isObject(spec.weighting) ? spec.weighting : {};
  const strategies = Object.keys(caps.weightings || {});
  $("#spec-weighting").replaceChildren(option("", "default (fixed)", !weighting.strategy),
    ...strategies.map((s) => option(s, s, weighting.strategy === s)));
  renderWeightingParams(weighting);
  for (const input of document.querySelectorAll("#spec-fields input[data-path]")) {
    const [part, field] = input.dataset.path.split(".");
    const v = isObject(spec[part]) ? spec[part][field] : undefined;
    input.value = v === undefined || v === null ? "" : String(v);
  }
  // early stopping is on by default: absent or an object = on; false / null = off
  const stopping = isObject(spec.training) ? spec.training.early_stopping : undefined;
  $("#spec-early-stopping").checked = stopping !== false && stopping !== null;
  refreshHeadOptions();
}

function renderWeightingParams(weighting) {
  const caps = specForm.caps;
  const params = (((caps.weightings || {})[$("#spec-weighting").value] || {}).params || {}).properties || {};
  $("#spec-weighting-params").replaceChildren(...Object.entries(params).map(([p, schema]) => el("label", {},
    `${p} `, el("input", { "data-param": p, inputmode: "decimal", size: 6, value: weighting[p] ?? "",
      placeholder: schema.default !== undefined ? String(schema.default) : "default" }))));
}

function headRow(t, index) {
  const field = (name, attrs = {}) => el("input", Object.assign({ "data-field": name }, attrs));
  const gate = isObject(t.gate) ? t.gate : {};
  return el("div", { class: "head-row", dataset: { index } },
    el("label", {}, "name ", field("name", { value: t.name ?? "", size: 10, list: "spec-columns", required: true })),
    el("label", {}, "column ", field("column", { value: t.column ?? "", size: 10, list: "spec-columns", placeholder: "= name" })),
    el("label", {}, "type ", el("select", { "data-field": "type", "data-value": t.type ?? "" })),
    el("label", { class: "classes" }, "classes ", field("classes", { value: (t.classes || []).join(", "), size: 12, placeholder: "from the data" })),
    el("label", {}, "loss ", el("select", { "data-field": "loss", "data-value": lossName(t.loss) })),
    el("label", {}, "weight ", field("weight", { value: t.weight ?? "", size: 4, inputmode: "decimal", placeholder: "1" })),
    el("label", {}, "gate ", el("select", { "data-field": "gate", "data-value": gate.task ?? "" })),
    el("label", { class: "gate-classes" }, "positive ", field("gate_classes", { value: (gate.classes || []).join(", "), size: 12 })),
    el("button", { type: "button", class: "secondary remove-head", title: "remove this head" }, "Remove"));
}

// The selects whose options depend on other rows (gate heads) or on the row's type (losses, classes).
function refreshHeadOptions() {
  const heads = specForm.caps.head_types || {};
  const rows = [...document.querySelectorAll("#spec-heads .head-row")];
  const named = rows.map((r) => ({ name: r.querySelector("[data-field=name]").value.trim(), type: selectValue(r, "type") }));
  rows.forEach((row, i) => {
    const type = selectValue(row, "type");
    const typeSel = row.querySelector("[data-field=type]");
    typeSel.replaceChildren(...Object.keys(heads).map((h) => option(h, h, h === type)),
      ...(type && !heads[type] ? [option(type, `${type} (unknown)`, true)] : []));
    const info = heads[typeSel.value] || {};
    const loss = selectValue(row, "loss");
    const lossSel = row.querySelector("[data-field=loss]");
    lossSel.replaceChildren(option("", `default (${info.default_loss || "-"})`, !loss),
      ...(info.losses || []).map((l) => option(l, l, l === loss)),
      ...(loss === KEEP ? [option(KEEP, "combined (edit in JSON)", true)] : []),
      ...(loss && loss !== KEEP && !(info.losses || []).includes(loss) ? [option(loss, `${loss} (not for ${typeSel.value})`, true)] : []));
    row.querySelector("[data-field=classes]").disabled = !info.classes;
    const gate = selectValue(row, "gate");
    const gateSel = row.querySelector("[data-field=gate]");
    const candidates = named.filter((h, j) => j !== i && h.name && (heads[h.type] || {}).can_gate);
    gateSel.replaceChildren(option("", "none", !gate), ...candidates.map((h) => option(h.name, h.name, h.name === gate)),
      ...(gate && !candidates.some((h) => h.name === gate) ? [option(gate, `${gate} (not a gate head)`, true)] : []));
    const gateType = (named.find((h) => h.name === gateSel.value) || {}).type;
    const positive = row.querySelector("[data-field=gate_classes]");
    positive.disabled = !gateSel.value || gateType === "binary";
    positive.placeholder = !gateSel.value ? "" : gateType === "binary" ? "true (binary)" : "class, class";
  });
}
function selectValue(row, fieldName) {  // the select's value, or the value it was drawn with (before its options exist)
  const sel = row.querySelector(`[data-field=${fieldName}]`);
  return sel.options.length ? sel.value : sel.dataset.value || "";
}

// ---------------------------------------------------------------------------------------------- form -> JSON
function formToSpec() {
  const old = specForm.spec;
  const spec = JSON.parse(JSON.stringify(old));
  const oldTasks = Array.isArray(old.tasks) ? old.tasks : [];
  const rows = [...document.querySelectorAll("#spec-heads .head-row")];
  spec.tasks = rows.map((row) => {
    const prev = isObject(oldTasks[Number(row.dataset.index)]) ? oldTasks[Number(row.dataset.index)] : {};
    const t = JSON.parse(JSON.stringify(prev));
    const value = (f) => row.querySelector(`[data-field=${f}]`).value.trim();
    const info = (specForm.caps.head_types || {})[value("type")] || {};
    t.name = value("name");
    setOrDelete(t, "column", value("column"));
    t.type = value("type");
    setOrDelete(t, "classes", info.classes && splitList(value("classes")).length ? splitList(value("classes")) : undefined);
    const loss = value("loss");
    if (loss !== KEEP) setOrDelete(t, "loss", !loss ? undefined : lossName(prev.loss) === loss ? prev.loss : loss);
    setOrDelete(t, "weight", numberOrText(value("weight")));
    const gateTask = value("gate");
    const positive = row.querySelector("[data-field=gate_classes]");
    if (!gateTask) delete t.gate;
    else {
      t.gate = { task: gateTask };
      if (!positive.disabled && splitList(positive.value).length) t.gate.classes = splitList(positive.value);
    }
    return t;
  });
  rows.forEach((row, i) => { row.dataset.index = i; });
  const strategy = $("#spec-weighting").value;
  const oldWeighting = isObject(old.weighting) ? old.weighting : {};
  // the same strategy keeps what the JSON had (e.g. temperature); another one starts from its own parameters
  const weighting = (oldWeighting.strategy || "") === strategy ? JSON.parse(JSON.stringify(oldWeighting)) : {};
  setOrDelete(weighting, "strategy", strategy);
  for (const input of document.querySelectorAll("#spec-weighting-params input[data-param]")) {
    setOrDelete(weighting, input.dataset.param, numberOrText(input.value));
  }
  setOrDelete(spec, "weighting", Object.keys(weighting).length ? weighting : undefined);
  for (const input of document.querySelectorAll("#spec-fields input[data-path]")) {
    const [part, field] = input.dataset.path.split(".");
    const section = isObject(spec[part]) ? spec[part] : {};
    setOrDelete(section, field, numberOrText(input.value));
    setOrDelete(spec, part, Object.keys(section).length ? section : undefined);
  }
  const training = isObject(spec.training) ? spec.training : {};
  const stopping = training.early_stopping;
  if (!$("#spec-early-stopping").checked) training.early_stopping = false;
  else if (stopping === false || stopping === null) delete training.early_stopping;  // back to the default (on)
  setOrDelete(spec, "training", Object.keys(training).length ? training : undefined);
  specForm.spec = spec;
  $("#job-spec").value = JSON.stringify(spec, null, 2);
}

// A renamed head stays the gate of the heads it gated (before formToSpec, the spec still has the old name).
function renameHead(input) {
  const tasks = Array.isArray(specForm.spec.tasks) ? specForm.spec.tasks : [];
  // the last non-empty name: typing a new name over a cleared field still carries the gates along
  const before = input.dataset.was || (tasks[Number(input.closest(".head-row").dataset.index)] || {}).name;
  const now = input.value.trim();
  if (before && now && before !== now) {
    for (const gate of document.querySelectorAll("#spec-heads [data-field=gate]")) {
      if (gate.value === before) { gate.append(option(now, now, true)); gate.value = now; }
    }
  }
  input.dataset.was = now || before || "";
  refreshHeadOptions();
}

function addHead() {
  const d = state.datasets.find((x) => x.id === $("#job-dataset").value);
  const used = new Set([...document.querySelectorAll("#spec-heads [data-field=name]")].map((i) => i.value.trim()));
  const free = Object.entries((d && d.columns) || {}).find(([c]) => !used.has(c));
  const kinds = { binary: "binary", categorical: "multiclass", numeric: "regression" };
  const task = free ? { name: free[0], type: kinds[free[1].kind] || "regression" } : { name: "", type: "regression" };
  const row = headRow(task, -1);
  $("#spec-heads").append(row);
  refreshHeadOptions();
  formToSpec();
  row.querySelector("[data-field=name]").focus();
}

function datasetColumns() {
  const d = state.datasets.find((x) => x.id === $("#job-dataset").value);
  $("#spec-columns").replaceChildren(...Object.keys((d && d.columns) || {}).map((c) => el("option", { value: c })));
}

document.addEventListener("DOMContentLoaded", () => {
  $("#job-spec").addEventListener("input", onSpecText);
  $("#job-dataset").addEventListener("change", datasetColumns);
  const builder = $("#spec-builder");
  builder.addEventListener("input", (e) => {
    if (e.target.matches("select")) return;  // selects: on change
    if (e.target.matches("[data-field=name]")) renameHead(e.target);
    formToSpec();
  });
  builder.addEventListener("change", (e) => {
    if (!e.target.matches("select")) return;
    if (e.target.matches("#spec-weighting")) renderWeightingParams({});
    if (e.target.matches("[data-field=type]")) {  // a new head type starts from its default loss
      const loss = e.target.closest(".head-row").querySelector("[data-field=loss]");
      const allowed = ((specForm.caps.head_types || {})[e.target.value] || {}).losses || [];
      if (!allowed.includes(loss.value)) loss.value = "";
    }
    refreshHeadOptions();
    formToSpec();
  });
  builder.addEventListener("click", (e) => {
    if (e.target.matches("#spec-add-head")) addHead();
    if (e.target.matches(".remove-head")) { e.target.closest(".head-row").remove(); refreshHeadOptions(); formToSpec(); }
  });
  document.addEventListener("headwise:cleared", () => {
    Object.assign(specForm, { caps: null, loading: null, spec: {} });
    $("#spec-error").hidden = true;
    $("#job-spec").classList.remove("invalid");
    builder.disabled = true;
    $("#spec-heads").replaceChildren();
    $("#spec-builder-status").textContent = "(enter a key)";
  });
  new MutationObserver(datasetColumns).observe($("#job-dataset"), { childList: true });
});
