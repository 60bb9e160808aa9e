// Deals: a hive's deals (the public listing), and create, edit, end or delete one.
import { clear, failure, h, iso, loading, section, when } from "../dom.js";
import { MANAGERS } from "./hive.js";
import { accountHives } from "./overview.js";

const KINDS = [["promotion", "Promotion"], ["discount", "Discount"], ["happy_hour", "Happy hour"], ["event", "Event"]];
const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

function localInput(isoText) {
  const d = new Date(isoText);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export async function renderDeals(ctx, hiveId) {
  document.title = `Deals · Bizzy Hive Analytics`;
  clear(ctx.main, h("h1", { text: "Deals" }), loading());
  let hives;
  try {
    hives = (await accountHives(ctx)).filter((hv) => hv.status !== "closed");
  } catch (err) {
    clear(ctx.main, h("h1", { text: "Deals" }), failure(err, "Hives"));
    return;
  }
  if (!hives.length) return clear(ctx.main, h("h1", { text: "Deals" }), h("p", { text: "This account has no hives." }));
  const hive = hives.find((hv) => hv.id === hiveId) || hives[0];
  const picker = h("select", { id: "deal-hive", onchange: (ev) => { location.hash = `#/deals/${ev.target.value}`; } },
    hives.map((hv) => h("option", { value: hv.id, selected: hv.id === hive.id, text: hv.name })));
  const canManage = MANAGERS.includes(ctx.account.role);
  const list = section(`Deals of ${hive.name}`, "deal-list", loading());
  const editor = canManage ? section("New deal", "deal-editor") : null;
  clear(ctx.main, h("h1", { text: "Deals" }), h("p", {}, h("label", { for: "deal-hive", text: "Hive " }), picker),
    h("div", { class: "grid two" }, list, editor));
  const state = { ctx, hive, list, editor, canManage };
  if (editor) showEditor(state, null);
  loadDeals(state);
}

async function loadDeals(state) {
  const { ctx, hive, list } = state;
  const title = list.querySelector("h2");
  try {
    const r = await ctx.api.get(`/v1/hives/${hive.id}/deals`);
    if (!r.items.length) return clear(list, title, h("p", { text: "No current or upcoming deals." }));
    clear(list, title, h("ul", { class: "deals" }, r.items.map((d) => dealItem(state, d))));
  } catch (err) {
    clear(list, title, failure(err, "Deals"));
  }
}

function dealItem(state, d) {
  const rule = d.daily ? `${d.daily.weekdays.map((w) => DAYS[w - 1]).join(", ")} ${d.daily.start}–${d.daily.end}` : null;
  const next = d.next_occurrence ? `next: ${when(d.next_occurrence.starts_at)} – ${when(d.next_occurrence.ends_at)}` : "";
  const actions = state.canManage ? h("span", { class: "actions" },
    h("button", { type: "button", class: "edit", text: "Edit", "aria-label": `Edit ${d.title}`, onclick: () => showEditor(state, d) }),
    h("button", { type: "button", class: "end", text: "End", "aria-label": `End ${d.title}`, onclick: () => endDeal(state, d) })) : null;
  return h("li", { "data-deal": d.id },
    h("strong", { text: d.title }), " ", h("span", { class: `tag ${d.status}`, text: d.status }),
    h("div", { class: "meta", text: [KINDS.find((k) => k[0] === d.kind)?.[1] || d.kind, rule || `${when(d.valid_from)} – ${when(d.valid_until)}`, next].filter(Boolean).join(" · ") }),
    d.description ? h("p", { text: d.description }) : null, actions);
}

async function endDeal(state, d) {
  const { ctx } = state;
  try {
    // a running deal ends now (it stays in the history); one not started yet goes
    if (Date.parse(d.valid_from) < Date.now()) await ctx.api.patch(`/v1/deals/${d.id}`, { valid_until: iso(new Date()) });
    else await ctx.api.del(`/v1/deals/${d.id}`);
    loadDeals(state);
  } catch (err) {
    state.list.append(failure(err, "Ending the deal"));
  }
}

function field(id, label, input) {
  return h("div", { class: "field" }, h("label", { for: id, text: label }), input);
}

function showEditor(state, deal) {
  const { ctx, hive, editor } = state;
  const title = editor.querySelector("h2");
  title.textContent = deal ? `Edit “${deal.title}”` : "New deal";
  const now = new Date();
  const inputs = {
    title: h("input", { id: "deal-title", type: "text", required: true, maxlength: "120", value: deal?.title || "" }),
    kind: h("select", { id: "deal-kind" }, KINDS.map(([v, t]) => h("option", { value: v, text: t, selected: deal?.kind === v }))),
    description: h("textarea", { id: "deal-description", maxlength: "2000", rows: "2" }, deal?.description || ""),
    from: h("input", { id: "deal-from", type: "datetime-local", required: true, value: localInput(deal?.valid_from || now) }),
    until: h("input", { id: "deal-until", type: "datetime-local", required: true,
      value: localInput(deal?.valid_until || new Date(now.getTime() + 30 * 86400e3)) }),
    daily: h("input", { id: "deal-daily", type: "checkbox", checked: Boolean(deal?.daily) }),
    start: h("input", { id: "deal-start", type: "time", value: deal?.daily?.start || "17:00" }),
    end: h("input", { id: "deal-end", type: "time", value: deal?.daily?.end || "19:00" }),
  };
  const days = DAYS.map((name, i) => h("label", { class: "day" }, h("input", { type: "checkbox", name: "weekday", value: i + 1,
    checked: deal?.daily ? deal.daily.weekdays.includes(i + 1) : i < 5 }), name));
  const dailyBox = h("fieldset", { class: "daily", hidden: !deal?.daily }, h("legend", { text: "Every week on" }), days,
    field("deal-start", "from", inputs.start), field("deal-end", "to", inputs.end));
  inputs.daily.addEventListener("change", () => { dailyBox.hidden = !inputs.daily.checked; });
  const error = h("p", { class: "error", role: "alert", id: "deal-error" });
  const done = h("p", { class: "ok", role: "status", id: "deal-done" });
  const form = h("form", { id: "deal-form" },
    field("deal-title", "Title", inputs.title), field("deal-kind", "Kind", inputs.kind),
    field("deal-description", "Description", inputs.description),
    field("deal-from", "Valid from", inputs.from), field("deal-until", "Valid until", inputs.until),
    h("div", { class: "field check" }, inputs.daily, h("label", { for: "deal-daily", text: "Daily deal (recurs in the hive's local time)" })),
    dailyBox,
    h("button", { type: "submit", id: "deal-save", text: deal ? "Save changes" : "Create deal" }),
    deal ? h("button", { type: "button", class: "link", text: "Cancel", onclick: () => showEditor(state, null) }) : null,
    error, done);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const body = { title: inputs.title.value.trim(), kind: inputs.kind.value,
      description: inputs.description.value.trim() || null,
      valid_from: iso(new Date(inputs.from.value)), valid_until: iso(new Date(inputs.until.value)),
      daily: inputs.daily.checked ? { weekdays: days.map((l) => l.firstChild).filter((c) => c.checked).map((c) => Number(c.value)),
        start: inputs.start.value, end: inputs.end.value } : null };
    try {
      const saved = deal ? await ctx.api.patch(`/v1/deals/${deal.id}`, body) : await ctx.api.post(`/v1/hives/${hive.id}/deals`, body);
      showEditor(state, null);
      editor.querySelector("#deal-done").textContent = `Saved “${saved.title}” (deal ${saved.id}).`;
      loadDeals(state);
    } catch (err) {
      error.textContent = err.param ? `${err.param}: ${err.message}` : err.message;
    }
  });
  clear(editor, title, form);
  if (deal) inputs.title.focus();
}
