// The live training chart of the job page: validation (solid) and training (dashed) loss per head and epoch, drawn
// as SVG from the SSE epoch events in state.epochs; a comparison job's sub-runs are kept apart.
// Uses $/el/svg/state from ui.js (loaded first).
"use strict";

const COLORS = ["#2563eb", "#e67e22", "#16a085", "#8e44ad", "#c0392b", "#7f8c8d", "#d4ac0d", "#1abc9c"];

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
