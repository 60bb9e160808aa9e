// Plain DOM helpers: h() builds elements, the rest are small formatters.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "style") el.setAttribute("style", value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function section(title, id, ...children) {
  const headingId = `${id}-title`;
  return h("section", { class: "card", id, "aria-labelledby": headingId },
    h("h2", { id: headingId, text: title }), ...children);
}

export function loading(text = "Loading…") {
  return h("p", { class: "loading", role: "status", text });
}

// An API failure shown where the data would be: "not available" for endpoints this
// server does not have, the reason for others.
export function failure(err, what) {
  if (err && err.notAvailable) {
    return h("p", { class: "unavailable", "data-state": "not-available",
      text: `${what}: not available on this server (${err.path}).` });
  }
  return h("p", { class: "error", role: "alert", "data-state": "error",
    text: `${what}: ${err && err.message ? err.message : err}` });
}

export function fmt(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Number(n).toLocaleString("en", { maximumFractionDigits: digits,
    minimumFractionDigits: 0 });
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function when(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" });
}

// Level of a hive: the share of its capacity in use, named and coloured.
export function level(occupancy, capacity) {
  if (occupancy === null || occupancy === undefined || !capacity) return { name: "unknown", share: 0 };
  const share = occupancy / capacity;
  const name = share >= 0.85 ? "full" : share >= 0.5 ? "busy" : "quiet";
  return { name, share: Math.min(1, share) };
}

export function change(value) {
  if (value === null || value === undefined) return h("span", { class: "change none", text: "no comparison" });
  const pct = Math.round(value * 1000) / 10;
  const dir = pct > 0 ? "up" : pct < 0 ? "down" : "flat";
  const sign = pct > 0 ? "+" : "";
  const arrow = dir === "up" ? "▲" : dir === "down" ? "▼" : "■";
  return h("span", { class: `change ${dir}`, text: `${arrow} ${sign}${pct}% vs previous period` });
}

export function isoHoursAgo(hours, from = Date.now()) {
  return new Date(from - hours * 3600e3).toISOString().replace(/\.\d+Z$/, "Z");
}

export function localMidnight(now = new Date()) {
  const d = new Date(now);
  d.setHours(0, 0, 0, 0);
  return d;
}

export function iso(date) {
  return date.toISOString().replace(/\.\d+Z$/, "Z");
}
