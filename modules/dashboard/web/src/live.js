// A hive's live occupancy widget: count, level bar and colour, freshness; fed by SSE.
import { occupancyStream } from "./api.js";
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

// Live widgets for `hives`; the first `limit` get a stream each, the others one
// snapshot (see the note the caller shows). Returns a stop function.
export function runLive(api, hives, widgets, limit, onStatus) {
  const stops = [];
  hives.slice(0, limit).forEach((hive) => {
    stops.push(occupancyStream(hive.id, (obj) => widgets.get(hive.id).show(obj),
      (status) => onStatus?.(hive.id, status)));
  });
  const rest = hives.slice(limit).map((hv) => hv.id);
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
  if (total <= limit) return null;
  return h("p", { class: "note", text: `Live updates for the first ${limit} hives; the other ${total - limit} show the state when the page was opened (open a hive for its live count).` });
}

export { clear };
