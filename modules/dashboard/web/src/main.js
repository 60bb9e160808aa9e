// The dashboard's shell: reads /dashboard/config.json, signs in with Firebase (email
// and password), finds the user's business accounts, and routes #/... to the pages.
import "uplot/dist/uPlot.min.css";
import "./style.css";
import { initializeApp } from "firebase/app";
import {
  browserLocalPersistence, connectAuthEmulator, initializeAuth, onAuthStateChanged,
  signInWithEmailAndPassword, signOut,
} from "firebase/auth";
import { createApi } from "./api.js";
import { clear, failure, h, loading } from "./dom.js";
import { renderDeals } from "./pages/deals.js";
import { renderHive } from "./pages/hive.js";
import { renderMembers } from "./pages/members.js";
import { renderOverview } from "./pages/overview.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const banner = document.getElementById("banner");
const app = { auth: null, user: null, api: null, me: null, accounts: [], account: null,
  config: null, cleanup: [] };

function setBanner(kind, text) {
  banner.className = kind ? `banner ${kind}` : "";
  banner.dataset.state = kind || "";
  banner.textContent = text || "";
}

function onOffline(down) {
  if (down) setBanner("error", "The server cannot be reached. Retrying when you act again; live numbers resume by themselves.");
  else if (banner.dataset.state === "error") setBanner("", "");
}

function onExpired() {
  setBanner("warning", "Your session has expired. Please sign in again.");
  signOut(app.auth).catch(() => {});
}

async function boot() {
  let config;
  try {
    const r = await fetch("config.json", { cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    config = await r.json();
  } catch (err) {
    clear(main, h("p", { class: "error", role: "alert", "data-state": "error",
      text: `The dashboard cannot start: the server cannot be reached (${err.message}). Reload the page to try again.` }));
    return;
  }
  app.config = config;
  const fb = initializeApp(config.firebase);
  app.auth = initializeAuth(fb, { persistence: browserLocalPersistence });
  if (config.authEmulator) connectAuthEmulator(app.auth, config.authEmulator, { disableWarnings: true });
  app.api = createApi({
    token: (fresh) => (app.auth.currentUser ? app.auth.currentUser.getIdToken(fresh) : null),
    onExpired, onOffline,
  });
  onAuthStateChanged(app.auth, (user) => {
    app.user = user;
    if (user) loadAccounts();
    else showSignIn();
  });
  window.addEventListener("hashchange", route);
}

function stopPage() {
  for (const fn of app.cleanup.splice(0)) fn();
}

function showSignIn() {
  stopPage();
  nav.hidden = true;
  clear(who);
  const error = h("p", { class: "error", role: "alert", id: "signin-error" });
  const email = h("input", { id: "email", type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { id: "password", type: "password", name: "password", autocomplete: "current-password", required: true });
  const button = h("button", { type: "submit", id: "signin", text: "Sign in" });
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title", text: "Sign in to your business" }),
    h("label", { for: "email", text: "Email" }), email,
    h("label", { for: "password", text: "Password" }), password,
    button, error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    error.textContent = "";
    try {
      await signInWithEmailAndPassword(app.auth, email.value.trim(), password.value);
      setBanner("", "");
    } catch (err) {
      error.textContent = signInMessage(err);
    } finally {
      button.disabled = false;
    }
  });
  clear(main, form);
  document.title = "Sign in · Bizzy Hive Analytics";
}

function signInMessage(err) {
  const code = err?.code || "";
  if (code.includes("network-request-failed")) return "The sign-in service cannot be reached. Try again later.";
  if (code.includes("invalid") || code.includes("wrong-password") || code.includes("user-not-found"))
    return "Wrong email or password.";
  if (code.includes("too-many-requests")) return "Too many attempts: wait a moment and try again.";
  return `Sign-in failed (${code || err?.message || err}).`;
}

async function loadAccounts() {
  clear(main, loading("Loading your accounts…"));
  try {
    const [me, list] = await Promise.all([app.api.get("/v1/me"), app.api.get("/v1/accounts")]);
    app.me = me;
    app.accounts = list.accounts;
  } catch (err) {
    if (!err.expired) clear(main, failure(err, "Your accounts"), retryButton(loadAccounts));
    return;
  }
  const saved = Number(localStorage.getItem("bizzy.account"));
  app.account = app.accounts.find((a) => a.id === saved) || app.accounts[0] || null;
  clear(who, h("span", { class: "email", text: app.user.email || app.me.uid }), " ",
    h("button", { type: "button", id: "signout", class: "link", text: "Sign out", onclick: () => signOut(app.auth) }));
  route();
}

function retryButton(fn) {
  return h("button", { type: "button", text: "Try again", onclick: fn });
}

function renderNav() {
  const page = location.hash.split("/")[1] || "overview";
  const links = [["overview", "#/", "Overview"], ["deals", "#/deals", "Deals"]];
  if (app.account && ["admin", "operator"].includes(app.account.role)) links.push(["members", "#/members", "Members"]);
  const picker = app.accounts.length > 1 ? accountPicker() : null;
  clear(nav, ...links.map(([key, href, text]) => h("a", { href, text,
    "aria-current": (key === page || (key === "overview" && page === "hive")) ? "page" : null })), picker);
  nav.hidden = false;
}

function accountPicker() {
  const select = h("select", { id: "account", "aria-label": "Account", onchange: (ev) => {
    app.account = app.accounts.find((a) => a.id === Number(ev.target.value));
    localStorage.setItem("bizzy.account", String(app.account.id));
    location.hash = "#/";
    route();
  } }, app.accounts.map((a) => h("option", { value: a.id, selected: a.id === app.account?.id, text: a.name })));
  return select;
}

function route() {
  if (!app.user || !app.me) return;
  stopPage();
  renderNav();
  if (!app.account) {
    clear(main, h("h1", { text: "No business account" }),
      h("p", { text: "This user is not a member of any business account. Ask an admin of your business to add you." }));
    return;
  }
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const ctx = { ...app, main, onCleanup: (fn) => app.cleanup.push(fn) };
  if (parts[0] === "hive" && parts[1]) renderHive(ctx, Number(parts[1]));
  else if (parts[0] === "deals") renderDeals(ctx, Number(parts[1]) || null);
  else if (parts[0] === "members") renderMembers(ctx);
  else renderOverview(ctx);
  main.focus({ preventScroll: true });
}

boot();
