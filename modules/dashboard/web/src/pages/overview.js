// Account overview: KPI cards and every hive with its live occupancy.
import { change, clear, failure, fmt, h, iso, loading, localMidnight, section } from "../dom.js";
import { liveWidget, runLive, streamNote } from "../live.js";

const KPIS = [
  ["visits", "Visits today", (v) => fmt(v)],
  ["avg_occupancy", "Average occupancy", (v) => fmt(v, 1)],
  ["peak_occupancy", "Peak occupancy", (v) => fmt(v)],
  ["peak_hours", "Busiest hour", (v) => (v && v.length ? `${String(v[0]).padStart(2, "0")}:00` : "–")],
];

export async function accountHives(ctx) {
  const cached = ctx.account._hives;
  if (cached) return cached;
  const r = await ctx.api.get(`/v1/accounts/${ctx.account.id}/hives`);
  ctx.account._hives = r.items;
  return r.items;
}

export function renderOverview(ctx) {
  document.title = `${ctx.account.name} · Bizzy Hive Analytics`;
  const kpis = section("Today", "kpis", loading());
  const hivesBox = section("Hives", "hives", loading());
  clear(ctx.main, h("h1", { text: ctx.account.name }), kpis, hivesBox);
  loadKpis(ctx, kpis);
  loadHives(ctx, hivesBox);
}

async function loadKpis(ctx, box) {
  const from = iso(localMidnight());
  try {
    const r = await ctx.api.get(`/v1/accounts/${ctx.account.id}/kpis?from=${from}&to=${iso(new Date())}`);
    const cards = KPIS.map(([key, title, show]) => h("div", { class: "kpi", "data-kpi": key },
      h("div", { class: "kpi-title", text: title }),
      h("div", { class: "kpi-value", text: show(r.total[key]) }),
      key === "peak_hours" ? h("span", { class: "change none", text: "local time" }) : change(r.total.change?.[key])));
    clear(box, box.querySelector("h2"), h("div", { class: "kpis" }, cards));
  } catch (err) {
    clear(box, box.querySelector("h2"), failure(err, "Key figures"));
  }
}

async function loadHives(ctx, box) {
  const title = box.querySelector("h2");
  let hives;
  try {
    hives = (await accountHives(ctx)).filter((hv) => hv.status !== "closed");
  } catch (err) {
    clear(box, title, failure(err, "Hives"));
    return;
  }
  if (!hives.length) {
    clear(box, title, h("p", { text: "This account has no hives yet." }));
    return;
  }
  const widgets = new Map();
  const items = hives.map((hive) => {
    const w = liveWidget(hive);
    widgets.set(hive.id, w);
    return h("li", { class: "hive-row" },
      h("a", { href: `#/hive/${hive.id}`, class: "hive-name", text: hive.name }),
      h("span", { class: "hive-where", text: `${hive.address?.city || ""} · ${hive.type}${hive.status !== "active" ? ` · ${hive.status.replace("_", " ")}` : ""}` }),
      w.el);
  });
  const limit = ctx.config.liveStreams ?? 4;
  clear(box, title, streamNote(hives.length, limit), h("ul", { class: "hive-list" }, items));
  ctx.onCleanup(runLive(ctx.api, hives, widgets, limit));
}
