// Myriad dashboard: plain JavaScript, no build step, no network beyond this server.
// Data comes from /dashboard/api/* (the cookie set at /dashboard?token=... authenticates).
"use strict";

const $ = (sel) => document.querySelector(sel);
const COLORS = ["#2f6fed", "#f59e0b", "#16a34a", "#dc2626", "#7c3aed", "#0ea5e9", "#db2777", "#65a30d", "#9333ea", "#ea580c"];
let selectedTrace = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(path) {
  const r = await fetch("/dashboard/api/" + path, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/dashboard"; throw new Error("unauthenticated"); }
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

const fmtInt = (n) => (n || 0).toLocaleString();
const fmtMs = (ms) => ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : ms.toFixed(ms < 10 ? 2 : 1) + " ms";
const fmtUsd = (x) => x ? "$" + (x < 0.01 ? x.toPrecision(2) : x.toFixed(4)) : "–";
const fmtTime = (ns) => new Date(ns / 1e6).toLocaleTimeString();

async function loadOverview() {
  const o = await api("overview");
  const t = o.telemetry || {};
  const pill = $("#telemetry-status");
  if (t.enabled) {
    const exp = (t.traces || []).map((x) => x.exporter === "otlp" ? "OTLP " + x.protocol : x.exporter).join(", ") || "local only";
    pill.textContent = "telemetry on · " + exp + " · sampler " + t.sampler + " · semconv " + t.semconv;
    pill.className = "pill on";
  } else {
    pill.textContent = "telemetry off" + (t.reason ? " (" + t.reason + ")" : "");
    pill.className = "pill off";
  }
  const body = $("#agents tbody");
  body.replaceChildren(...o.agents.map((a) => el("tr", {},
    el("td", { text: a.agent }), el("td", { class: "n", text: fmtInt(a.resident) }),
    el("td", { class: "n", text: fmtInt(a.hibernated) }), el("td", { class: "n", text: fmtInt(a.stored) }))));
  if (!o.agents.length) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted", text: "no agent classes" })));
}

async function loadSandboxes() {
  const s = await api("sandboxes");
  const rows = Object.entries(s.tiers);
  const body = $("#sandboxes tbody");
  body.replaceChildren(...rows.map(([tier, v]) => el("tr", {},
    el("td", { text: tier }), el("td", { class: "n", text: fmtInt(v.live) }), el("td", { class: "n", text: fmtInt(v.runs) }),
    el("td", { class: "n", text: fmtInt(v.errors) }), el("td", { class: "n", text: v.p50_ms == null ? "–" : v.p50_ms }),
    el("td", { class: "n", text: v.p95_ms == null ? "–" : v.p95_ms }))));
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no sandbox runs yet" })));
}

function metricOf(p, metric) {
  if (metric === "tokens") return p.input_tokens + p.output_tokens;
  return p[metric];
}

function drawChart(data, metric) {
  const box = $("#usage-chart");
  const W = box.clientWidth || 800, H = box.clientHeight || 220, L = 56, B = 22, T = 8, R = 8;
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const n = data.buckets.length;
  // stacked bars: one stack per bucket, one colour per series
  const totals = data.buckets.map((_, i) => data.series.reduce((s, ser) => s + metricOf(ser.points[i], metric), 0));
  const max = Math.max(1e-12, ...totals);
  const x = (i) => L + (i * (W - L - R)) / Math.max(1, n);
  const bw = Math.max(1, (W - L - R) / Math.max(1, n) - 1);
  const y = (v) => H - B - (v / max) * (H - B - T);
  const line = (x1, y1, x2, y2) => { const l = document.createElementNS(NS, "line"); Object.entries({ x1, y1, x2, y2 }).forEach(([k, v]) => l.setAttribute(k, v)); l.setAttribute("class", "axis"); return l; };
  const text = (tx, ty, s, anchor) => { const t = document.createElementNS(NS, "text"); t.setAttribute("x", tx); t.setAttribute("y", ty); t.setAttribute("text-anchor", anchor || "end"); t.textContent = s; return t; };
  svg.append(line(L, H - B, W - R, H - B), line(L, T, L, H - B));
  const label = metric === "cost_usd" ? (v) => "$" + v.toPrecision(2) : (v) => Math.round(v).toLocaleString();
  svg.append(text(L - 4, T + 8, label(max)), text(L - 4, H - B, "0"));
  data.series.forEach((ser, si) => {
    ser.points.forEach((p, i) => {
      const below = data.series.slice(0, si).reduce((s, o) => s + metricOf(o.points[i], metric), 0);
      const v = metricOf(p, metric);
      if (!v) return;
      const r = document.createElementNS(NS, "rect");
      r.setAttribute("x", x(i)); r.setAttribute("width", bw);
      r.setAttribute("y", y(below + v)); r.setAttribute("height", Math.max(1, y(below) - y(below + v)));
      r.setAttribute("fill", COLORS[si % COLORS.length]);
      const tip = document.createElementNS(NS, "title");
      tip.textContent = `${ser.key} · ${new Date(p.t * 1000).toLocaleTimeString()} · ${label(v)}`;
      r.append(tip); svg.append(r);
    });
  });
  if (n) {
    svg.append(text(L, H - 6, new Date(data.buckets[0] * 1000).toLocaleTimeString(), "start"));
    svg.append(text(W - R, H - 6, new Date(data.buckets[n - 1] * 1000).toLocaleTimeString(), "end"));
  }
  box.replaceChildren(svg);
  $("#usage-legend").replaceChildren(...data.series.map((ser, si) => el("span", {},
    el("i", { style: "background:" + COLORS[si % COLORS.length] }),
    `${ser.key}: ${fmtInt(ser.total_tokens)} tokens, ${fmtUsd(ser.cost_usd)}`)));
  if (!data.series.length) $("#usage-legend").append(el("span", { class: "muted", text: "no model calls in this window" }));
}

async function loadUsage() {
  const by = $("#usage-by").value, metric = $("#usage-metric").value, since = +$("#usage-since").value;
  const bucket = since <= 60 ? 1 : since <= 360 ? 5 : 30;
  drawChart(await api(`usage?by=${by}&since=${since}&bucket=${bucket}`), metric);
  const l = await api("ledger");
  $("#ledger").textContent = l.enabled
    ? `metered (ledger): ${l.rows.length} rows, total ${l.total_cost || "0"} ${l.currency || ""}`
    : "metering is off on this server";
}

async function loadTurns() {
  const { turns } = await api("turns?limit=50");
  const body = $("#turns tbody");
  body.replaceChildren(...turns.map((t) => {
    const tr = el("tr", { "data-trace": t.trace_id, onclick: () => showTrace(t.trace_id) },
      el("td", { text: fmtTime(t.start) }), el("td", { text: t.agent || "" }),
      el("td", { text: (t.agent_id || "").split("/").slice(2).join("/") }),
      el("td", { class: "n", text: fmtMs(t.duration_ms) }), el("td", { class: "n", text: t.model_calls }),
      el("td", { class: "n", text: `${fmtInt(t.input_tokens)} / ${fmtInt(t.output_tokens)}` }),
      el("td", { class: "n", text: fmtUsd(t.cost_usd) }),
      el("td", { class: "status-" + (t.status === "error" ? "error" : "ok"), text: t.status === "error" ? (t.error || "error") : "ok" }));
    if (t.trace_id === selectedTrace) tr.classList.add("sel");
    return tr;
  }));
  if (!turns.length) body.append(el("tr", {}, el("td", { colspan: 8, class: "muted", text: "no turns yet" })));
}

function depthOf(spans) {
  const byId = Object.fromEntries(spans.map((s) => [s.span_id, s]));
  const depth = {};
  const d = (s, guard = 0) => {
    if (depth[s.span_id] != null) return depth[s.span_id];
    const p = s.parent_id && byId[s.parent_id];
    return (depth[s.span_id] = p && guard < 64 ? d(p, guard + 1) + 1 : 0);
  };
  spans.forEach((s) => d(s));
  return depth;
}

function order(spans) {
  // depth-first: each span followed by its children, children by start time
  const kids = {};
  const ids = new Set(spans.map((s) => s.span_id));
  spans.forEach((s) => { const p = ids.has(s.parent_id) ? s.parent_id : "root"; (kids[p] = kids[p] || []).push(s); });
  Object.values(kids).forEach((l) => l.sort((a, b) => a.start - b.start));
  const out = [];
  const walk = (id) => (kids[id] || []).forEach((s) => { out.push(s); walk(s.span_id); });
  walk("root");
  return out;
}

async function showTrace(traceId) {
  selectedTrace = traceId;
  document.querySelectorAll("#turns tbody tr").forEach((r) => r.classList.toggle("sel", r.dataset.trace === traceId));
  const { spans } = await api("traces/" + traceId);
  $("#trace-card").hidden = false;
  $("#trace-id").textContent = traceId;
  const t0 = Math.min(...spans.map((s) => s.start)), t1 = Math.max(...spans.map((s) => s.end));
  const total = Math.max(1, t1 - t0);
  const depth = depthOf(spans);
  $("#span-detail").textContent = "";
  $("#waterfall").replaceChildren(...order(spans).map((s) => {
    const bar = el("div", { class: "wf-bar k-" + s.kind + (s.status === "error" ? " err" : ""),
      style: `left:${((s.start - t0) / total) * 100}%;width:${Math.max(0.2, ((s.end - s.start) / total) * 100)}%`,
      title: s.name });
    return el("div", { class: "wf-row", "data-span": s.name, onclick: () => {
        $("#span-detail").textContent = JSON.stringify({ name: s.name, kind: s.kind, status: s.status, error: s.error,
          duration_ms: s.duration_ms, attributes: s.attributes, events: s.events }, null, 2);
      } },
      el("div", { class: "wf-name", style: `padding-left:${depth[s.span_id] * 1.1}em`, text: s.name }),
      el("div", { class: "wf-track" }, bar),
      el("div", { class: "wf-dur", text: fmtMs(s.duration_ms) }));
  }));
}

async function loadErrors() {
  const e = await api("errors?limit=30");
  const items = [
    ...e.spans.map((s) => ({ t: s.end / 1e6, lvl: "span", msg: `${s.name}: ${s.error || s.attributes["error.type"] || "error"}`, trace: s.trace_id })),
    ...e.logs.map((l) => ({ t: l.time * 1000, lvl: l.level, msg: `[${l.logger}] ${l.message}`, trace: l.trace_id })),
  ].sort((a, b) => b.t - a.t).slice(0, 30);
  $("#errors").replaceChildren(...items.map((i) => el("li", {},
    el("span", { class: "muted", text: new Date(i.t).toLocaleTimeString() + " " }), el("span", { class: "lvl", text: i.lvl }), i.msg + " ",
    i.trace && i.trace !== "0" ? el("a", { onclick: () => showTrace(i.trace), text: "trace" }) : "")));
  if (!items.length) $("#errors").append(el("li", { class: "muted", text: "no errors" }));
}

async function refresh() {
  const jobs = [loadOverview(), loadSandboxes(), loadUsage(), loadTurns(), loadErrors()];
  const results = await Promise.allSettled(jobs);
  results.filter((r) => r.status === "rejected").forEach((r) => console.warn(r.reason));
  document.body.dataset.loaded = "1";
}

$("#trace-close").addEventListener("click", () => { $("#trace-card").hidden = true; selectedTrace = null; });
["#usage-by", "#usage-metric", "#usage-since"].forEach((s) => $(s).addEventListener("change", loadUsage));
refresh();
setInterval(() => { if ($("#auto").checked) refresh(); }, 5000);
