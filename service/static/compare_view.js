// Comparison jobs in the dashboard: the `compare` block of a new job (Jobs tab: single-task models, other weighting
// strategies, seeds, what to register) and the report of a job that has one (GET /v1/jobs/{id}/comparison): per
// head and variant the validation metric with its spread over seeds, the verdict against single-task, the best
// weighting (and whether the plain sum is within noise of it), the trivial baseline and each variant's compute.
// Uses el/api/fmt/$/state/imageInto/TERMINAL from ui.js (loaded first).
"use strict";

const comparison = { jobId: null, timer: null, busy: false, again: undefined };

// ------------------------------------------------------------------------------------------- the compare block
function renderCompareChoices(caps) {
  const box = $("#compare-weighting");
  const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  box.replaceChildren(...Object.keys((caps && caps.weightings) || {}).map((s) => el("label", {},
    el("input", { type: "checkbox", value: s, checked: checked.has(s) || null }), ` ${s}`)));
}
// The block for POST /v1/jobs, or null when nothing is compared; the server checks it (422 naming the field).
function compareBlock() {
  if (!$("#compare-on").checked) return null;
  const block = { single_task: $("#compare-single").checked,
    weighting: [...document.querySelectorAll("#compare-weighting input:checked")].map((i) => i.value) };
  const seeds = $("#compare-seeds").value.trim();
  if (seeds) block.seeds = Number.isFinite(Number(seeds)) ? Number(seeds) : seeds;
  if ($("#compare-register").value) block.register = $("#compare-register").value;
  return block;
}

// -------------------------------------------------------------------------------------------------- the report
const variantLabel = (name) => (name === "main" ? "main (this spec)" : name === "single_task" ? "single-task" : name);
const pm = (r) => (typeof r.std === "number" ? `±${fmt(r.std)}` : "");
const range = (r) => (typeof r.min === "number" && typeof r.max === "number" && r.min !== r.max ? `${fmt(r.min)}–${fmt(r.max)}` : "");
const signed = (v) => (typeof v === "number" ? `${v > 0 ? "+" : ""}${fmt(v)}` : "-");

function verdictCell(h) {
  const v = h.verdict || {};
  if (!v.single_task) return el("td", { class: "muted verdict" }, "no single-task runs");
  const cls = v.single_task === "multi-task better" ? "ok" : v.single_task === "multi-task worse" ? "error" : "muted";
  return el("td", { class: `verdict ${cls}`, dataset: { verdict: v.single_task } }, v.single_task,
    el("div", { class: "muted" }, `d ${signed(v.difference)}, noise ${fmt(v.noise)} (${v.method || "-"})`));
}
function bestCell(h) {
  const b = h.best_weighting;
  if (!b) return el("td", { class: "muted" }, "-");
  const fixed = b.fixed_within_noise === true ? "fixed within noise" : b.fixed_within_noise === false ? "beats fixed beyond noise" : "";
  return el("td", { class: "best-weighting", dataset: { variant: b.variant } }, variantLabel(b.variant), el("div", { class: "muted" }, fixed));
}
function baselineCell(h) {
  const b = h.baseline;
  if (!b || b.value === null || b.value === undefined) return el("td", { class: "muted" }, "-");
  const flag = h.beats_baseline === false;
  return el("td", { class: flag ? "error baseline" : "muted baseline", dataset: { beats: String(h.beats_baseline) } },
    `${b.kind || "baseline"} ${fmt(b.value)}`, flag ? el("div", {}, "⚠ main does not beat it") : null);
}

function headRows(h) {
  const results = h.results || [];
  const best = (h.best_weighting || {}).variant;
  const first = [el("td", { rowspan: results.length, class: "head" }, el("strong", {}, h.head),
    el("div", { class: "muted" }, `${h.metric} (${h.higher_is_better ? "higher" : "lower"} is better), ${h.labelled} val rows`))];
  const shared = [verdictCell(h), bestCell(h), baselineCell(h)].map((c) => { c.rowSpan = results.length; return c; });
  return results.map((r, i) => el("tr", { dataset: { head: h.head, variant: r.variant }, class: r.variant === best ? "best" : "" },
    i === 0 ? first : null, el("td", {}, variantLabel(r.variant)),
    el("td", { class: "mean" }, r.mean === null ? "-" : fmt(r.mean), " ", el("span", { class: "muted" }, pm(r))),
    el("td", { class: "muted" }, range(r)), el("td", { class: "muted" }, (r.values || []).map((x) => fmt(x)).join(", ")),
    el("td", {}, r.labelled ?? "-"), i === 0 ? shared : null));
}

function renderComparison(c) {
  const box = $("#job-comparison");
  box.hidden = false;
  box.dataset.complete = String(c.complete);
  $("#comparison-progress").textContent = `${c.runs_done}/${c.runs_total} sub-runs${c.complete ? "" : " (running; the report grows with each)"}`;
  const overall = c.best_weighting;
  $("#comparison-summary").replaceChildren(...[
    overall ? el("p", { id: "comparison-best" }, "best weighting overall: ", el("strong", {}, overall.strategy || variantLabel(overall.variant)),
      ` (mean rank ${fmt(overall.mean_rank)}) — ${overall.note || ""}`) : null,
    c.registered ? el("p", { class: "muted" }, `registered: ${variantLabel(c.registered.variant)}, seed ${c.registered.seed}` +
      (c.registered.version ? ` → v${c.registered.version}` : "")) : null,
  ].filter(Boolean));
  fill($("#comparison-heads tbody"), (c.heads || []).flatMap(headRows));
  fill($("#comparison-compute tbody"), (c.variants || []).map((v) => {
    const cost = v.compute || {};
    return el("tr", { dataset: { variant: v.name } }, el("td", {}, variantLabel(v.name)), el("td", {}, v.strategy || v.weighting || "-"),
      el("td", {}, `${v.runs_done ?? 0}/${v.runs ?? "?"}`), el("td", {}, fmt(cost.seconds)), el("td", {}, fmt(cost.epochs)),
      el("td", {}, fmt(cost.samples)));
  }));
  $("#comparison-rules").replaceChildren(...[c.verdict_rule, c.register_rule].filter(Boolean).map((r) => el("p", {}, r)));
}

async function loadComparison(jobId, final) {
  if (comparison.busy) { comparison.again = comparison.again || final; return; }  // one request at a time
  comparison.busy = true;
  try {
    const c = await api(`/v1/jobs/${jobId}/comparison`);
    if (comparison.jobId !== jobId) return;  // another job was opened meanwhile
    renderComparison(c);
    if ((final || c.complete) && c.plot && (c.heads || []).length) {
      const path = c.plot.startsWith("/") ? c.plot : `/v1/jobs/${jobId}/plots/${c.plot}`;
      await imageInto($("#comparison-plot"), path).catch(() => {});
    }
  } finally { comparison.busy = false; }
  if (comparison.again !== undefined && comparison.jobId === jobId) {
    const again = comparison.again;
    comparison.again = undefined;
    await loadComparison(jobId, again);
  }
}

// Called by ui.js when a job is opened and on each of its live events.
function showComparison(job) {
  clearInterval(comparison.timer);
  comparison.jobId = job && job.compare ? job.id : null;
  $("#job-comparison").hidden = true;
  $("#comparison-plot").hidden = true;
  if (!comparison.jobId) return;
  guarded(() => loadComparison(job.id, TERMINAL.has(job.status)));
  if (!TERMINAL.has(job.status)) {  // the report grows after each sub-run: refresh while the job runs
    comparison.timer = setInterval(() => loadComparison(job.id, false).catch(() => {}), 5000);
  }
}
function comparisonEvent(type, data) {
  if (!comparison.jobId || type !== "status" || !TERMINAL.has(data.status)) return;
  clearInterval(comparison.timer);
  guarded(() => loadComparison(comparison.jobId, true));
}

document.addEventListener("DOMContentLoaded", () => {
  $("#compare-on").addEventListener("change", () => { $("#compare-options").hidden = !$("#compare-on").checked; });
  document.addEventListener("headwise:capabilities", (e) => renderCompareChoices(e.detail));
  document.addEventListener("headwise:cleared", () => {
    clearInterval(comparison.timer);
    comparison.jobId = null;
    $("#job-comparison").hidden = true;
    $("#comparison-plot").hidden = true;
  });
});
