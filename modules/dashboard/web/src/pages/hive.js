// Hive page: live count, the last 7 days, today against the usual day, popular times,
// a comparison, sensor health, corrections and capacity schedule, feedback.
import { history, occupancyStream } from "../api.js";
import { heatmap, lineChart, seconds } from "../charts.js";
import { ago, clear, failure, fmt, h, iso, isoHoursAgo, loading, section, when } from "../dom.js";
import { liveWidget } from "../live.js";
import { accountHives } from "./overview.js";
import { renderCompare } from "./compare.js";

export const MANAGERS = ["manager", "admin", "operator"];

export async function renderHive(ctx, hiveId) {
  clear(ctx.main, loading());
  let hive;
  try {
    hive = (await accountHives(ctx)).find((hv) => hv.id === hiveId);
  } catch (err) {
    clear(ctx.main, failure(err, "Hive"));
    return;
  }
  if (!hive) {
    clear(ctx.main, h("h1", { text: "Hive not found" }),
      h("p", { text: `Hive ${hiveId} is not one of ${ctx.account.name}'s hives.` }), h("a", { href: "#/", text: "Back to the overview" }));
    return;
  }
  document.title = `${hive.name} · Bizzy Hive Analytics`;
  const charts = [];
  ctx.onCleanup(() => charts.forEach((c) => c.destroy()));
  const keep = (chart) => { charts.push(chart); return chart.el; };
  const live = liveWidget(hive, { big: true });
  ctx.onCleanup(occupancyStream(hive.id, live.show));
  const timer = setInterval(live.tick, 5000);
  ctx.onCleanup(() => clearInterval(timer));

  const parts = {
    week: section("Last 7 days (hourly)", "history", loading()),
    today: section("Today against the usual day", "today", loading()),
    popular: section("Popular times", "popular", loading()),
    compare: section("Compare", "compare"),
    health: section("Sensor health", "health", loading()),
    corrections: section("Corrections and capacity schedule", "corrections", loading()),
    feedback: section("Feedback", "feedback", loading()),
  };
  clear(ctx.main, h("p", { class: "crumbs" }, h("a", { href: "#/", text: ctx.account.name }), " › ", hive.name),
    h("h1", { text: hive.name }), h("div", { class: "card" }, live.el),
    h("div", { class: "grid" }, Object.values(parts)));
  const base = `/v1/hives/${hive.id}`;
  loadWeek(ctx, base, parts.week, keep);
  loadToday(ctx, hive, base, parts.today, keep);
  loadPopular(ctx, base, parts.popular);
  renderCompare(ctx, hive, parts.compare, keep);
  loadHealth(ctx, base, parts.health);
  loadCorrections(ctx, base, parts.corrections);
  loadFeedback(ctx, hive, parts.feedback);
}

function body(box, ...children) {
  clear(box, box.querySelector("h2"), ...children);
}

function value(bucket) {
  const v = bucket.corrected?.avg ?? bucket.avg;
  return bucket.empty ? null : v;
}

async function loadWeek(ctx, base, box, keep) {
  const to = isoHoursAgo(0);
  let r;
  let note = null;
  try {
    r = await history(ctx.api, base, isoHoursAgo(24 * 7), to, "1h");
  } catch (err) {
    if (err.status !== 403) return body(box, failure(err, "Occupancy history"));
    note = h("p", { class: "note", text: `Showing the last 24 hours: ${err.message}.` });
    try {
      r = await history(ctx.api, base, isoHoursAgo(24), to, "1h");
    } catch (err2) {
      return body(box, failure(err2, "Occupancy history"));
    }
  }
  const x = r.buckets.map((b) => seconds(b.start));
  const chart = lineChart({ title: "Average occupancy per hour, last 7 days", x,
    series: [{ label: "average", values: r.buckets.map(value) },
      { label: "peak", values: r.buckets.map((b) => (b.empty ? null : b.corrected?.max ?? b.max)), color: "#b8420f", dash: [4, 3] }] });
  body(box, note, keep(chart), r.has_corrections ? h("p", { class: "note", text: "Corrected values are shown where corrections apply." }) : null);
}

// hive-local weekday (1 = Monday) and hour of a moment
function localParts(date, timezone) {
  const parts = new Intl.DateTimeFormat("en-GB", { timeZone: timezone, weekday: "short", hour: "numeric", hourCycle: "h23" })
    .formatToParts(date);
  const get = (type) => parts.find((p) => p.type === type)?.value;
  return { weekday: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].indexOf(get("weekday")) + 1, hour: Number(get("hour")) };
}

async function loadToday(ctx, hive, base, box, keep) {
  const now = new Date();
  const start = new Date(now.getTime() - localParts(now, hive.timezone).hour * 3600e3);
  start.setMinutes(0, 0, 0);
  const slots = Array.from({ length: 24 }, (_, i) => new Date(start.getTime() + i * 3600e3));
  const [today, popular, forecast] = await Promise.allSettled([
    history(ctx.api, base, iso(start), iso(now), "1h"),
    ctx.api.get(`${base}/popular-times`),
    ctx.api.get(`${base}/forecast?hours=24`),
  ]);
  const failed = [today, popular, forecast].filter((p) => p.status === "rejected");
  if (failed.length === 3) return body(box, failure(failed[0].reason, "Today against the usual day"));
  const bySlot = (items, key, pick) => slots.map((s) => {
    const found = items.find((it) => Math.abs(Date.parse(it[key]) - s.getTime()) < 1800e3);
    return found ? pick(found) : null;
  });
  const series = [];
  if (today.status === "fulfilled") series.push({ label: "today", values: bySlot(today.value.buckets, "start", value) });
  if (popular.status === "fulfilled") {
    const days = popular.value.days;
    series.push({ label: "usual", color: "#6b3fa0", dash: [6, 4], values: slots.map((s) => {
      const p = localParts(s, hive.timezone);
      return days.find((d) => d.weekday === p.weekday)?.hours.find((x) => x.hour === p.hour)?.avg ?? null;
    }) });
  }
  let band = null;
  if (forecast.status === "fulfilled") {
    const hours = forecast.value.hours;
    series.push({ label: "expected", color: "#2a7d2e", values: bySlot(hours, "start", (x) => x.expected) });
    if (forecast.value.band) band = { label: "likely range", low: bySlot(hours, "start", (x) => x.low), high: bySlot(hours, "start", (x) => x.high) };
  }
  const chart = lineChart({ title: "Today: actual, usual and expected occupancy", x: slots.map((s) => s.getTime() / 1000), series, band });
  const best = forecast.status === "fulfilled" && forecast.value.best_time
    ? h("p", { text: `Quietest time in the next 24 h: ${when(forecast.value.best_time.start)} (about ${fmt(forecast.value.best_time.expected)} people).` }) : null;
  body(box, keep(chart), best, failed.map((f) => failure(f.reason, "Part of this chart")));
}

async function loadPopular(ctx, base, box) {
  try {
    const r = await ctx.api.get(`${base}/popular-times`);
    const peaks = (r.peak_hours || []).slice(0, 3).map((p) => `${["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][p.weekday - 1]} ${p.hour}:00`);
    body(box, heatmap(r.days), h("p", { text: `Over the last ${r.weeks} weeks (local time). Peak hours: ${peaks.join(", ") || "–"}.` }));
  } catch (err) {
    body(box, failure(err, "Popular times"));
  }
}

async function loadHealth(ctx, base, box) {
  try {
    const r = await ctx.api.get(`${base}/health`);
    if (!r.sensors.length) return body(box, h("p", { text: "This hive has no sensors." }));
    const rows = r.sensors.map((s) => h("tr", { class: s.offline ? "bad" : "" },
      h("td", { text: s.serial || s.external_id || String(s.sensor_id) }),
      h("td", { text: s.battery === null || s.battery === undefined ? "–" : `${s.battery}%` }),
      h("td", { text: s.signal === null || s.signal === undefined ? "–" : `${s.signal} dBm` }),
      h("td", { text: ago(s.last_seen) }),
      h("td", { text: s.offline ? "offline" : "online" }),
      h("td", { text: s.door_imbalance?.flag ? `imbalance (net ${s.door_imbalance.net})` : "ok" }),
      h("td", { text: s.config?.pending ? "pending" : "applied" })));
    body(box, h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": "Sensor health table" }, h("table", { class: "data", id: "sensors" },
      h("thead", {}, h("tr", {}, ["Sensor", "Battery", "Signal", "Last seen", "State", "Doors", "Config"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows))), h("p", { class: "note", text: `As of ${when(r.as_of)}.` }));
  } catch (err) {
    body(box, failure(err, "Sensor health"));
  }
}

async function loadCorrections(ctx, base, box) {
  const canManage = MANAGERS.includes(ctx.account.role);
  const [corr, sched] = await Promise.allSettled([ctx.api.get(`${base}/corrections`), ctx.api.get(`${base}/capacity-schedule`)]);
  const parts = [h("h3", { text: "Corrections" })];
  if (corr.status === "fulfilled") {
    const list = corr.value.corrections;
    parts.push(list.length ? h("ul", { class: "plain", id: "correction-list" }, list.slice(0, 10).map((c) =>
      h("li", { text: `${when(c.at)}: set to ${c.occupancy} (was ${c.previous ?? "–"}) — ${c.reason}` })))
      : h("p", { text: "No corrections." }));
    if (canManage) parts.push(correctionForm(ctx, base, box));
  } else parts.push(failure(corr.reason, "Corrections"));
  parts.push(h("h3", { text: "Capacity schedule" }));
  if (sched.status === "fulfilled") {
    const s = sched.value;
    parts.push(h("p", { text: `Default capacity: ${fmt(s.default_capacity)}.` }),
      s.entries.length ? h("ul", { class: "plain", id: "schedule-list" }, s.entries.map((e) =>
        h("li", { text: `${when(e.from)} – ${when(e.to)}: ${fmt(e.capacity)}${e.label ? ` (${e.label})` : ""}` })))
        : h("p", { text: "No scheduled changes." }));
    if (canManage) parts.push(scheduleForm(ctx, base, box, s.entries));
  } else parts.push(failure(sched.reason, "Capacity schedule"));
  body(box, ...parts);
}

function formError() {
  return h("p", { class: "error", role: "alert" });
}

function correctionForm(ctx, base, box) {
  const err = formError();
  const occ = h("input", { id: "corr-occupancy", type: "number", min: "0", required: true });
  const reason = h("input", { id: "corr-reason", type: "text", maxlength: "200", required: true });
  return h("form", { class: "inline", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await ctx.api.post(`${base}/corrections`, { occupancy: Number(occ.value), reason: reason.value });
      loadCorrections(ctx, base, box);
    } catch (e) {
      err.textContent = e.message;
    }
  } }, h("label", { for: "corr-occupancy", text: "People inside now" }), occ,
  h("label", { for: "corr-reason", text: "Reason" }), reason, h("button", { type: "submit", id: "corr-submit", text: "Correct" }), err);
}

function scheduleForm(ctx, base, box, entries) {
  const err = formError();
  const from = h("input", { id: "sched-from", type: "datetime-local", required: true });
  const to = h("input", { id: "sched-to", type: "datetime-local", required: true });
  const cap = h("input", { id: "sched-capacity", type: "number", min: "1", required: true });
  const label = h("input", { id: "sched-label", type: "text", maxlength: "100" });
  return h("form", { class: "inline", onsubmit: async (ev) => {
    ev.preventDefault();
    const entry = { from: iso(new Date(from.value)), to: iso(new Date(to.value)), capacity: Number(cap.value), label: label.value || null };
    try {
      await ctx.api.put(`${base}/capacity-schedule`, { entries: [...entries, entry] });
      loadCorrections(ctx, base, box);
    } catch (e) {
      err.textContent = e.message;
    }
  } }, h("label", { for: "sched-from", text: "From" }), from, h("label", { for: "sched-to", text: "To" }), to,
  h("label", { for: "sched-capacity", text: "Capacity" }), cap, h("label", { for: "sched-label", text: "Label" }), label,
  h("button", { type: "submit", id: "sched-submit", text: "Add to schedule" }), err);
}

async function loadFeedback(ctx, hive, box) {
  try {
    const r = await ctx.api.get(`/v1/accounts/${ctx.account.id}/feedback?hive=${hive.id}&from=${isoHoursAgo(24 * 30)}`);
    const t = r.totals.find((x) => x.hive_id === hive.id);
    const msgs = r.messages.filter((m) => m.hive_id === hive.id);
    if (!t || !t.count) return body(box, h("p", { text: "No feedback in the last 30 days." }));
    const bar = (name, n) => h("div", { class: `senti ${name}`, style: `flex-grow: ${n}`, title: `${name}: ${n}` }, n ? `${name} ${n}` : "");
    body(box,
      h("p", { text: `${t.count} messages in the last 30 days · average rating ${fmt(t.avg_rating, 1)} of 5 · sentiment ${fmt(t.avg_sentiment, 2)}` }),
      h("div", { class: "senti-bar", "data-chart": "sentiment", "data-points": String(t.count) },
        bar("positive", t.positive), bar("neutral", t.neutral), bar("negative", t.negative)),
      h("ul", { class: "feedback" }, msgs.slice(0, 20).map((m) => h("li", { class: m.label },
        h("span", { class: "stars", "aria-label": `${m.rating ?? "no"} of 5 stars`, text: m.rating ? "★".repeat(m.rating) + "☆".repeat(5 - m.rating) : "–" }),
        h("span", { class: "label", text: m.label }), " ", h("q", { text: m.content }), " ", h("small", { text: when(m.created_at) })))));
  } catch (err) {
    body(box, failure(err, "Feedback"));
  }
}
