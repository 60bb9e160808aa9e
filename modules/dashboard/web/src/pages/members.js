// Members (admins): add by user id, change roles, remove. Other roles never get here
// (the link is hidden) and the API refuses them anyway.
import { clear, failure, h, loading, section, when } from "../dom.js";

const ROLES = ["viewer", "manager", "admin"];

export function renderMembers(ctx) {
  document.title = `Members · Bizzy Hive Analytics`;
  const isAdmin = ["admin", "operator"].includes(ctx.account.role);
  if (!isAdmin) {
    clear(ctx.main, h("h1", { text: "Members" }), h("p", { text: `Only admins manage members (your role: ${ctx.account.role}).` }));
    return;
  }
  const list = section("Members", "member-list", loading());
  clear(ctx.main, h("h1", { text: `Members of ${ctx.account.name}` }), list, addForm(ctx, list));
  load(ctx, list);
}

async function load(ctx, box) {
  const title = box.querySelector("h2");
  try {
    const r = await ctx.api.get(`/v1/accounts/${ctx.account.id}/members`);
    const rows = r.items.map((m) => memberRow(ctx, box, m));
    clear(box, title, h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": "Members table" }, h("table", { class: "data", id: "members" },
      h("thead", {}, h("tr", {}, ["User", "Role", "Member since", ""].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows))));
  } catch (err) {
    clear(box, title, failure(err, "Members"));
  }
}

function memberRow(ctx, box, m) {
  const self = m.user_id === ctx.me.id;
  const id = `role-${m.user_id}`;
  const role = h("select", { id, "aria-label": `Role of user ${m.user_id}` },
    ROLES.map((r) => h("option", { value: r, text: r, selected: r === m.role })));
  const error = h("span", { class: "error", role: "alert" });
  role.addEventListener("change", async () => {
    try {
      await ctx.api.put(`/v1/accounts/${ctx.account.id}/members/${m.user_id}`, { role: role.value });
      load(ctx, box);
    } catch (err) {
      role.value = m.role;
      error.textContent = err.message;
    }
  });
  const remove = h("button", { type: "button", text: "Remove", "aria-label": `Remove user ${m.user_id}`, onclick: async () => {
    try {
      await ctx.api.del(`/v1/accounts/${ctx.account.id}/members/${m.user_id}`);
      load(ctx, box);
    } catch (err) {
      error.textContent = err.message;
    }
  } });
  return h("tr", { "data-user": m.user_id },
    h("td", { text: `${m.nickname || "user"} #${m.user_id}${self ? " (you)" : ""}` }),
    h("td", {}, role), h("td", { text: when(m.created_at) }), h("td", {}, remove, error));
}

function addForm(ctx, list) {
  const user = h("input", { id: "member-user", type: "number", min: "1", required: true });
  const role = h("select", { id: "member-role" }, ROLES.map((r) => h("option", { value: r, text: r })));
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "inline" },
    h("label", { for: "member-user", text: "User id (from their app profile)" }), user,
    h("label", { for: "member-role", text: "Role" }), role,
    h("button", { type: "submit", text: "Add member" }), error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      await ctx.api.put(`/v1/accounts/${ctx.account.id}/members/${Number(user.value)}`, { role: role.value });
      user.value = "";
      load(ctx, list);
    } catch (err) {
      error.textContent = err.message;
    }
  });
  return section("Add a member", "member-add", form);
}
