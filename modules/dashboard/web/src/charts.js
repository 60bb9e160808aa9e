// Charts: uPlot line charts (time on x) and the popular-times heatmap (a table).
import uPlot from "uplot";
import { h } from "./dom.js";

const COLORS = ["#1f5fbf", "#b8420f", "#2a7d2e", "#6b3fa0"];

function width(el) {
  return Math.max(260, Math.floor(el.clientWidth || el.parentNode?.clientWidth || 600));
}

// `x`: seconds since the epoch; `series`: [{label, values, color?, dash?, fill?}];
// `band`: {low, high, label} drawn as a shaded area. Returns {el, destroy}.
export function lineChart({ title, x, series, band = null, height = 220, yLabel = "people", time = true, xLabel = null }) {
  const el = h("figure", { class: "chart", role: "img", "aria-label": title });
  const data = [x];
  const opts = {
    width: 600, height,
    series: [{}],
    axes: [{ stroke: "#333", grid: { stroke: "#eee" }, label: xLabel }, { stroke: "#333", label: yLabel, grid: { stroke: "#eee" } }],
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
  };
  if (band) {
    data.push(band.high, band.low);
    opts.series.push({ label: `${band.label} (high)`, stroke: "#9bb7e0", width: 1 },
      { label: `${band.label} (low)`, stroke: "#9bb7e0", width: 1 });
    opts.bands = [{ series: [1, 2], fill: "rgba(31,95,191,0.15)" }];
  }
  series.forEach((s, i) => {
    data.push(s.values);
    opts.series.push({ label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: 2,
      dash: s.dash, spanGaps: false, points: { show: false } });
  });
  const points = data.slice(1).reduce((n, vals) => n + vals.filter((v) => v !== null && v !== undefined).length, 0);
  el.dataset.points = String(points);
  el.dataset.chart = title;
  const plot = new uPlot(opts, data, el);
  const resize = () => plot.setSize({ width: width(el), height });
  const observer = new ResizeObserver(resize);
  requestAnimationFrame(() => {
    resize();
    observer.observe(el);
  });
  return { el, destroy: () => { observer.disconnect(); plot.destroy(); } };
}

const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

// Popular times: weekday rows × 24 hour columns, shaded by `relative` (0..100).
export function heatmap(days) {
  const head = h("tr", {}, h("th", { scope: "col", text: "" }),
    Array.from({ length: 24 }, (_, hr) => h("th", { scope: "col", class: "hour", text: hr % 3 === 0 ? String(hr) : "",
      "aria-label": `${hr}:00` })));
  let cells = 0;
  const rows = days.map((day) => h("tr", {}, h("th", { scope: "row", text: WEEKDAYS[day.weekday - 1] }),
    day.hours.map((hour) => {
      const rel = hour.relative ?? 0;
      if (hour.avg !== null && hour.avg !== undefined) cells += 1;
      return h("td", { class: "cell", style: `background-color: ${shade(rel)}`, title: `${WEEKDAYS[day.weekday - 1]} ${hour.hour}:00 · average ${Math.round(hour.avg ?? 0)} people (${rel}% of the busiest hour)` },
        h("span", { class: "sr-only", text: `${hour.hour}:00 ${rel}%` }));
    })));
  const table = h("table", { class: "heatmap", "data-chart": "popular times", "data-points": String(cells) },
    h("caption", { class: "sr-only", text: "Popular times: share of the busiest hour of the week, by weekday and local hour" }),
    h("thead", {}, head), h("tbody", {}, rows));
  return h("div", { class: "heatmap-wrap", tabindex: "0", role: "region", "aria-label": "Popular times" }, table,
    h("div", { class: "legend", "aria-hidden": "true" }, "quiet ", h("span", { class: "scale" }), " busiest"));
}

function shade(relative) {
  const t = Math.max(0, Math.min(100, relative)) / 100;
  const light = 96 - t * 60;
  return `hsl(25, 85%, ${light}%)`;
}

export function seconds(iso) {
  return Math.floor(Date.parse(iso) / 1000);
}
