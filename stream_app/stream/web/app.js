// meterwatch live alerts: polls /api/alerts every 2 s, one row per alert (its latest message),
// and plots the selected alert's window (actual vs the autoencoder's expected readings) over
// the meter's recent readings. Text goes in through textContent only: ids are untrusted input.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
let selected = null;     // alert_id
let latest = new Map();  // alert_id -> newest message
let plotted = new Map(); // alert_id -> newest message that carries window values

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function short(stamp) {
  return (stamp || "-").replace("T", " ").replace("Z", "").slice(0, 19);
}

function ratio(a) {
  return a.threshold ? `${a.zscore.toFixed(2)} / ${a.threshold.toFixed(2)}` : "-";
}

async function refresh() {
  try {
    const resp = await fetch("/api/alerts", {cache: "no-store"});
    const data = await resp.json();
    latest = new Map();
    plotted = new Map();
    for (const a of data.alerts) {  // newest first
      if (!latest.has(a.alert_id)) latest.set(a.alert_id, a);
      if (a.actual && a.actual.length && !plotted.has(a.alert_id)) plotted.set(a.alert_id, a);
    }
    render();
    const silent = data.silent_meters.length ? `; silent meters: ${data.silent_meters.join(", ")}` : "";
    document.getElementById("status").textContent =
      `${latest.size} alerts (${data.alerts.length} messages), bundle ${data.bundle}; ` +
      `updated ${new Date().toLocaleTimeString()}${silent}`;
  } catch (err) {
    document.getElementById("status").textContent = `cannot reach the worker: ${err}`;
  }
}

function render() {
  const body = document.getElementById("alerts");
  body.replaceChildren();
  if (selected === null || !latest.has(selected)) selected = plotted.keys().next().value ?? null;
  for (const [id, a] of latest) {
    const row = el("tr", undefined, "alert" + (id === selected ? " selected" : ""));
    row.id = "alert-" + id;
    row.dataset.alertId = id;
    row.append(el("td", short(a.produced_at)), el("td", a.status, "status-" + a.status),
      el("td", a.severity, "sev-" + a.severity), el("td", a.meter_id), el("td", a.category),
      el("td", a.kind), el("td", ratio(a)), el("td", a.reason, "reason"));
    row.addEventListener("click", () => { selected = id; render(); });
    body.append(row);
  }
  document.getElementById("empty").hidden = latest.size > 0;
  showDetail();
}

async function showDetail() {
  const a = latest.get(selected);
  if (!a) return;
  const w = plotted.get(selected) || a;
  document.getElementById("detail-title").textContent =
    `${a.meter_id}: ${a.kind} ${a.status} (${a.severity})`;
  document.getElementById("detail-text").textContent =
    `alert ${a.alert_id}\nwindow ${short(w.window_start)} .. ${short(w.window_end)} ` +
    `(${w.window_size} readings)\n${a.reason}`;
  let context = [];
  try {
    const resp = await fetch("/api/readings?meter=" + encodeURIComponent(a.meter_id),
                             {cache: "no-store"});
    if (resp.ok) context = (await resp.json()).readings;
  } catch (err) { /* the window alone is still worth drawing */ }
  if (selected === a.alert_id) plot(w, context);
}

function windowPoints(a, values) {
  const end = Date.parse(a.window_end), start = Date.parse(a.window_start);
  const step = values.length > 1 ? (end - start) / (values.length - 1) : 0;
  return values.map((v, i) => [start + i * step, v]);
}

function plot(a, context) {
  const svg = document.getElementById("plot");
  svg.replaceChildren();
  const width = 540, height = 260, pad = {l: 48, r: 10, t: 12, b: 28};
  const actual = windowPoints(a, a.actual || []), expected = windowPoints(a, a.expected || []);
  // recent readings only around the window (one window-span either side): an old alert's
  // window may lie days before the meter's latest readings
  const lo = actual.length ? actual[0][0] : -Infinity, hi = actual.length ? actual.at(-1)[0] : Infinity;
  const span = Math.max(hi - lo, 1);
  const recent = context.filter(([t]) => t >= lo - span && t <= hi + span);
  const all = [...actual, ...expected, ...recent];
  if (!all.length) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", 20); t.setAttribute("y", 40);
    t.textContent = "this alert carries no readings (e.g. a silent meter)";
    svg.append(t);
    return;
  }
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(0, ...ys), y1 = Math.max(...ys);
  const sx = t => pad.l + (x1 > x0 ? (t - x0) / (x1 - x0) : 0.5) * (width - pad.l - pad.r);
  const sy = v => height - pad.b - (y1 > y0 ? (v - y0) / (y1 - y0) : 0.5) * (height - pad.t - pad.b);
  const line = (points, cls) => {
    if (!points.length) return;
    const p = document.createElementNS(SVG, "polyline");
    p.setAttribute("class", cls);
    p.setAttribute("points", points.map(([t, v]) => `${sx(t).toFixed(1)},${sy(v).toFixed(1)}`).join(" "));
    svg.append(p);
  };
  const label = (x, y, text) => {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", x); t.setAttribute("y", y); t.textContent = text;
    svg.append(t);
  };
  const axis = document.createElementNS(SVG, "path");
  axis.setAttribute("d", `M${pad.l},${pad.t} V${height - pad.b} H${width - pad.r}`);
  axis.setAttribute("stroke", "#999"); axis.setAttribute("fill", "none");
  svg.append(axis);
  line(recent, "context");
  line(expected, "expected");
  line(actual, "actual");
  label(4, sy(y1) + 4, y1.toFixed(1));
  label(4, sy(y0) + 4, y0.toFixed(1));
  label(pad.l - 30, height - 6, short(new Date(x0).toISOString()));
  label(width - 130, height - 6, short(new Date(x1).toISOString()));
  label(4, (height - pad.b) / 2, "kWh");
}

refresh();
setInterval(refresh, POLL_MS);
