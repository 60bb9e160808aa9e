// A hive's live occupancy widget: count, level bar and colour, freshness; fed by SSE.
import { occupancyStreamMany } from "./api.js";
import { ago, clear, fmt, h, level } from "./dom.js";

export function liveWidget(hive, { big = false } = {}) {
  const count = h("span", { class: "count", "data-testid": "count", text: "–" });
  const of = h("span", { class: "of", text: ` / ${fmt(hive.capacity)}` });
  const bar = h("span", { class: "fill" });
  const label = h("span", { class: "level-name", text: "…" });
  const fresh = h("span", { class: "fresh", "data-testid": "fresh", text: "waiting for data" });
  const usual = h("span", { class: "usual" });
  const el = h("div", { class: `live${big ? " big" : ""}`, "data-level": "unknown", "data-hive": hive.id },
    h("div", { class: "numbers", "aria-live": big ? "polite" : "off" }, count, of, " ", label),
    h("div", { class: "bar", "aria-hidden": "true" }, bar), h("div", { class: "meta" }, fresh, usual));
  let state = null;

  function show(obj) {
    state = obj;
    const capacity = obj.capacity || hive.capacity;
    const lv = level(obj.occupancy, capacity);
    count.textContent = fmt(obj.occupancy);
    of.textContent = ` / ${fmt(capacity)}`;
    label.textContent = lv.name;
    el.dataset.level = lv.name;
    el.dataset.occupancy = String(obj.occupancy);
    bar.style.width = `${Math.round(lv.share * 100)}%`;
    usual.textContent = obj.vs_usual ? ` · ${obj.vs_usual} than usual` : "";
    tick();
  }

  function tick() {
    if (!state) return;
    const seen = state.as_of || state.updated_at;
    let text = `updated ${ago(seen)}`;
    if (state.sensors_total) text += ` · ${state.sensors_reporting ?? "?"} of ${state.sensors_total} sensors reporting`;
    const stale = state.stale === true;
    el.classList.toggle("stale", stale);
    fresh.textContent = stale ? `stale: ${text}` : text;
  }

  return { el, show, tick, get state() { return state; } };
}

// Live widgets for `hives`: one stream per PER_STREAM hives, at most `limit` streams
// (a browser keeps 6 connections per host); hives beyond get one snapshot (see the
// note the caller shows). Returns a stop function.
export const PER_STREAM = 100;

export function runLive(api, hives, widgets, limit, onStatus) {
  const stops = [];
  const live = hives.slice(0, limit * PER_STREAM);
  for (let i = 0; i < live.length; i += PER_STREAM) {
    const group = live.slice(i, i + PER_STREAM);
    stops.push(occupancyStreamMany(group.map((hv) => hv.id),
      (obj) => widgets.get(obj.hive_id)?.show(obj),
      (status) => group.forEach((hv) => onStatus?.(hv.id, status))));
  }
  const rest = hives.slice(limit * PER_STREAM).map((hv) => hv.id);
  for (let i = 0; i < rest.length; i += 100) {
    api.get(`/v1/occupancy?ids=${rest.slice(i, i + 100).join(",")}`).then((r) => {
      for (const obj of r.hives) widgets.get(obj.hive_id)?.show(obj);
    }).catch(() => {});
  }
  const timer = setInterval(() => widgets.forEach((w) => w.tick()), 5000);
  return () => {
    clearInterval(timer);
    stops.forEach((stop) => stop());
  };
}

export function streamNote(total, limit) {
  const live = limit * PER_STREAM;
  if (total <= live) return null;
  return h("p", { class: "note", text: `Live updates for the first ${live} hives; the other ${total - live} show the state when the page was opened (open a hive for its live count).` });
}

export { clear };
