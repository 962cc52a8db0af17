// The Usage panel: tokens and mean latency per UTC day and per model, from GET /api/usage
// (summary.by_day_model over since/until), drawn as plain SVG (no chart library: two small charts
// do not need one), with the same numbers as a table beside them.
import { $, api, el } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const DAY_MS = 86_400_000;
const W = 560;
const H = 200;
const PAD = { left: 56, right: 8, top: 10, bottom: 26 };
const SERIES = 6; // colours in style.css: .series-0 ... .series-5

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const child of children) node.append(child);
  return node;
}

// the UTC days from `since` to today, as "YYYY-MM-DD"
function daysFrom(since) {
  const days = [];
  for (let t = since; t <= Date.now(); t += DAY_MS) days.push(new Date(t).toISOString().slice(0, 10));
  return days;
}

function compact(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${Math.round(n / 1e3)}k`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(Math.round(n));
}

function frame(id, label, max, unit, days) {
  const plotH = H - PAD.top - PAD.bottom;
  const title = svg("title", { id: `${id}-title` });
  title.textContent = label;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${id}-title`, class: "chart", id }, title);
  for (const f of [0, 0.5, 1]) {
    const y = PAD.top + plotH * (1 - f);
    chart.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }));
    const tick = svg("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end", class: "tick" });
    tick.textContent = `${compact(max * f)}${f ? unit : ""}`;
    chart.append(tick);
  }
  const step = (W - PAD.left - PAD.right) / Math.max(days.length, 1);
  for (const i of [0, Math.floor((days.length - 1) / 2), days.length - 1]) {
    if (i < 0) continue;
    const tick = svg("text", { x: PAD.left + step * (i + 0.5), y: H - 8, "text-anchor": "middle", class: "tick" });
    tick.textContent = days[i].slice(5);
    chart.append(tick);
  }
  return { chart, plotH, step };
}

function tokensChart(rows, days, models) {
  const perDay = new Map(days.map((d) => [d, 0]));
  for (const r of rows) perDay.set(r.day, (perDay.get(r.day) || 0) + r.prompt_tokens + r.completion_tokens);
  const max = Math.max(1, ...perDay.values());
  const { chart, plotH, step } = frame("usage-tokens", "Tokens per day, stacked by model", max, "", days);
  const width = Math.max(2, step * 0.7);
  days.forEach((day, i) => {
    let y = PAD.top + plotH;
    for (const r of rows.filter((x) => x.day === day)) {
      const h = (plotH * (r.prompt_tokens + r.completion_tokens)) / max;
      y -= h;
      chart.append(svg("rect", { x: PAD.left + step * i + (step - width) / 2, y, width, height: Math.max(h, 0.5),
        class: `bar series-${models.indexOf(r.model) % SERIES}` }));
    }
  });
  return chart;
}

function latencyChart(rows, days, models) {
  const max = Math.max(1, ...rows.map((r) => r.avg_ms));
  const { chart, plotH, step } = frame("usage-latency", "Mean latency per day and model, in ms", max, " ms", days);
  models.forEach((model, m) => {
    const points = rows.filter((r) => r.model === model).map((r) => [
      PAD.left + step * (days.indexOf(r.day) + 0.5), PAD.top + plotH * (1 - r.avg_ms / max)]);
    const cls = `series-${m % SERIES}`;
    if (points.length > 1) chart.append(svg("polyline", { points: points.map((p) => p.join(",")).join(" "), class: `line ${cls}` }));
    for (const [x, y] of points) chart.append(svg("circle", { cx: x, cy: y, r: 3.5, class: `dot ${cls}` }));
  });
  return chart;
}

function legend(models) {
  return el("ul", { class: "legend", "aria-label": "Models" }, ...models.map((model, m) =>
    el("li", {}, el("span", { class: `swatch series-${m % SERIES}`, "aria-hidden": "true" }), model || "(unknown)")));
}

function table(rows) {
  const head = ["Day (UTC)", "Model", "Calls", "Prompt tokens", "Completion tokens", "Mean latency"];
  return el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Usage numbers" },
    el("table", { class: "usage-table" },
      el("caption", {}, "Usage per day and model"),
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows.slice().reverse().map((r) => el("tr", {},
        el("td", {}, r.day), el("td", {}, r.model || "(unknown)"), el("td", { class: "num" }, String(r.count)),
        el("td", { class: "num" }, String(r.prompt_tokens)), el("td", { class: "num" }, String(r.completion_tokens)),
        el("td", { class: "num" }, `${Math.round(r.avg_ms)} ms`))))));
}

export async function loadUsage() {
  const days = Number($("usage-days").value) || 30;
  const now = new Date();
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  const since = today - (days - 1) * DAY_MS;
  const data = await api("GET", `/api/usage?since=${since}&limit=1`);
  const rows = data.summary.by_day_model;
  const models = [...new Set(rows.map((r) => r.model))].sort();
  const dayList = daysFrom(since);
  const body = $("usage-body");
  if (!rows.length) {
    body.replaceChildren(el("p", { class: "hint" }, "No model calls in this period."));
    return;
  }
  const total = rows.reduce((n, r) => n + r.prompt_tokens + r.completion_tokens, 0);
  const calls = rows.reduce((n, r) => n + r.count, 0);
  body.replaceChildren(
    el("p", { class: "usage-total" }, `${calls} model calls, ${total} tokens in the last ${days} days.`),
    el("figure", {}, el("figcaption", {}, "Tokens per day"), tokensChart(rows, dayList, models)),
    el("figure", {}, el("figcaption", {}, "Mean latency per day"), latencyChart(rows, dayList, models)),
    legend(models),
    table(rows));
}
