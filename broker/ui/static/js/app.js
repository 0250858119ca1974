// The dashboard shell: login, navigation (hash routes), polling, toasts, the status line.
// Each page module exports {id, title, mount(root, ctx, params, path) -> refresh()}; the
// shell calls refresh() every POLL_MS while the page is shown.

import {api, setKey, hasKey, onReadFrom} from "./api.js";
import {h, replace, parseHash, fmtTime, badge} from "./dom.js";
import * as history from "./history.js";
import overview from "./pages/overview.js";
import queues from "./pages/queues.js";
import tasks from "./pages/tasks.js";
import task from "./pages/task.js";
import failed from "./pages/failed.js";
import scheduled from "./pages/scheduled.js";
import workers from "./pages/workers.js";
import cluster from "./pages/cluster.js";
import schedules from "./pages/schedules.js";
import workflows from "./pages/workflows.js";
import workflow from "./pages/workflow.js";

const POLL_MS = 1000;
const NAV = [overview, queues, tasks, failed, scheduled, schedules, workflows, workers, cluster];
const ROUTES = Object.fromEntries([...NAV, task, workflow].map((p) => [p.id, p]));
// A detail page highlights the list it belongs to in the navigation.
const PARENT = {task: "tasks", workflow: "workflows"};

const $ = (id) => document.getElementById(id);
let me = null;          // GET /api/v1/whoami of the key in use
let stats = null;       // the latest /stats, shared with the Overview page
let refresh = null;     // the shown page's refresh()
let generation = 0;     // bumped on every navigation: a late answer for an old page is dropped
let busy = false, again = false, timer = null;
let lastRead = null, lastError = null, lastOk = null;
// A page whose reads cost the broker much (a filter matching few tasks in a big store walks
// up to 100,000 entries per page) is re-read less often: after a refresh that took T ms the
// next one waits SLOW_FACTOR * T, so one open tab never keeps a broker core busy.
const SLOW_MS = 250, SLOW_FACTOR = 3;
let pageDueAt = 0, pageForced = false;

const ctx = {
  api,
  can: (permission) => Boolean(me && me.allows && me.allows[permission]),
  go: (hash) => { if (location.hash === hash) route(); else location.hash = hash; },
  lastStats: () => Promise.resolve(stats),
  refreshNow,
  toast,
  // Run a change (a button), say how it went, and refresh at once rather than at the next tick.
  async act(label, fn) {
    try {
      await fn();
      toast(`${label}: done`, "ok");
    } catch (err) {
      toast(`${label}: ${err.message}`, "bad");
      if (err.status === 401) logout("the key is no longer accepted");
    }
    refreshNow();
  },
};

function toast(text, kind) {
  const el = h("div", {class: ["toast", `toast-${kind || "info"}`], role: "status"}, text);
  $("toasts").append(el);
  setTimeout(() => el.remove(), 5000);
}

async function tick() {
  if (!me) return;
  if (busy) { again = true; return; }
  busy = true;
  const gen = generation;
  try {
    stats = await api.stats();
    history.record(stats);
    if (refresh && gen === generation && (pageForced || performance.now() >= pageDueAt)) {
      pageForced = false;
      const began = performance.now();
      await refresh();
      const took = performance.now() - began;
      pageDueAt = took > SLOW_MS ? began + took * (1 + SLOW_FACTOR) : 0;
    }
    lastError = null;
    lastOk = Date.now() / 1000;
  } catch (err) {
    lastError = err;
    if (err.status === 401) logout("the key is no longer accepted");
  } finally {
    busy = false;
    renderStatus();
  }
  if (again) { again = false; tick(); }
}

function refreshNow() {  // after a click or a navigation: now, however slow the page is
  pageForced = true;
  tick();
}

function route() {
  if (!me) return;
  const {path, params} = parseHash(location.hash);
  const page = ROUTES[path[0]] || overview;
  generation++;
  const root = h("div", {"data-page": page.id});
  replace($("page"), root);
  $("page-title").textContent = page.title;
  document.title = `${page.title} · task-queue`;
  for (const link of $("nav").querySelectorAll("a")) {
    link.classList.toggle("active", link.dataset.page === page.id ||
      PARENT[page.id] === link.dataset.page);
  }
  refresh = page.mount(root, ctx, params, path);
  refreshNow();
}

function renderStatus() {
  const parts = [];
  if (lastRead) {
    parts.push(h("span", {"data-testid": "read-from"},
      `read from ${lastRead.node_id} (${lastRead.role}, applied ${lastRead.applied_index}` +
      `${lastRead.lag === null || lastRead.lag === undefined ? "" : `, lag ${lastRead.lag}`}` +
      `${lastRead.caught_up === false ? ", catching up" : ""})`));
  }
  if (lastOk) parts.push(h("span", {}, `updated ${fmtTime(lastOk).slice(11, 19)}`));
  if (lastError) {
    parts.push(h("span", {class: "status-error", "data-testid": "last-error"},
                 `${lastError.code}: ${lastError.message}`));
  }
  replace($("status"), parts);
  if (stats) {
    const rf = stats.read_from;
    replace($("node-badge"), badge(`${rf.node_id} · ${rf.role}`,
                                   rf.role === "leader" ? "ok" : "info"));
  }
}

function start(who) {
  me = who;
  $("login").hidden = true;
  $("app").hidden = false;
  const readOnly = !ctx.can("cancel_tasks") && !ctx.can("admin");
  replace($("who"), `${me.name} (${me.permissions.join(", ") || "no permissions"})`,
          readOnly ? [" ", badge("read-only", "info")] : null);
  $("logout").hidden = !me.auth_enabled;
  replace($("nav"), NAV.map((p) => h("a", {href: `#/${p.id}`, "data-page": p.id}, p.title)));
  route();
  clearInterval(timer);
  timer = setInterval(tick, POLL_MS);
}

function logout(reason) {
  setKey(null);
  me = null;
  stats = null;
  refresh = null;
  history.clear();
  clearInterval(timer);
  replace($("page"));
  $("app").hidden = true;
  $("login").hidden = false;
  $("api-key").value = "";
  const error = $("login-error");
  error.hidden = !reason;
  error.textContent = reason || "";
  $("api-key").focus();
}

async function login(ev) {
  ev.preventDefault();
  const error = $("login-error");
  setKey($("api-key").value.trim());
  $("api-key").value = "";
  try {
    start(await api.whoami());
    error.hidden = true;
  } catch (err) {
    setKey(null);
    error.hidden = false;
    error.textContent = err.status === 401 ? "That key was not accepted." : err.message;
  }
}

async function boot() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout(null));
  window.addEventListener("hashchange", route);
  onReadFrom((rf) => { lastRead = rf; });
  // A key from earlier in this tab, or none at all when the broker runs without auth.
  try {
    start(await api.whoami());
  } catch (err) {
    logout(hasKey() && err.status === 401 ? "the key is no longer accepted" : null);
  }
}

boot();
