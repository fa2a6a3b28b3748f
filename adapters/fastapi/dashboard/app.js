// The operators' dashboard: schedules and their runs, read and changed through this server's
// REST routes with the operator's token. The token lives in sessionStorage (this tab only) and
// goes out in the Authorization header, never in a URL. Values are put in the page as text
// (textContent), never as markup: a schedule's name or a run's error is data, not HTML.
"use strict";

const TOKEN_KEY = "leasecron.token";
const POLL_MS = 2000; // an open schedule's runs are read again this often
const PAGE_SIZE = 20;
const FILTER_DELAY_MS = 250; // typing in the filter box asks once it pauses
const LOCAL_FORMAT = {
  year: "numeric", month: "short", day: "numeric",
  hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
};

const state = {
  page: 1,
  q: "",
  open: null, // the schedule whose runs are shown: {id, name}
  runsPage: 1,
  poll: null, // the pending setTimeout of the runs poll
  generation: 0, // bumped on every open/close: an answer for an older view is dropped
};

const $ = (selector) => document.querySelector(selector);

class Unauthorized extends Error {}

// -- the REST routes ---------------------------------------------------------------------------

function detailText(status, body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return `${status}: ${detail}`;
  if (Array.isArray(detail)) {
    return `${status}: ` + detail.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`)
      .join("; ");
  }
  return `${status}: the server answered without a reason`;
}

async function api(path, method = "GET") {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { method, headers, cache: "no-store" });
  if (response.status === 401) {
    const refused = token !== null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(refused ? "That token was refused." : null); // null: keep what it says
    throw new Unauthorized();
  }
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new Error(detailText(response.status, body));
  return body;
}

function report(error) {
  if (error instanceof Unauthorized) return; // the sign-in form is showing
  const message = $("#message");
  message.textContent = error.message || String(error);
  message.className = "error";
}

function say(text) {
  const message = $("#message");
  message.textContent = text;
  message.className = "";
}

// -- formatting --------------------------------------------------------------------------------

function plural(n, unit) {
  return `${n} ${unit}${n === 1 ? "" : "s"}`;
}

function spanInWords(seconds) {
  const parts = [];
  let rest = seconds;
  for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60]]) {
    if (rest >= size) {
      parts.push(plural(Math.floor(rest / size), unit));
      rest %= size;
    }
  }
  if (rest > 0 || parts.length === 0) parts.push(plural(+rest.toFixed(3), "second"));
  return parts.join(" ");
}

const DAYS = ["Sundays", "Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays"];
const MACROS = {
  "@yearly": "yearly", "@annually": "yearly", "@monthly": "monthly", "@weekly": "weekly",
  "@daily": "daily", "@midnight": "daily", "@hourly": "hourly",
};

// Common cron forms in words; anything else is shown as the expression alone.
function cronInWords(expr) {
  const text = expr.trim();
  if (MACROS[text.toLowerCase()]) return MACROS[text.toLowerCase()];
  const f = text.split(/\s+/);
  if (f.length !== 5) return null;
  const [minute, hour, dom, month, dow] = f;
  const num = (v) => /^\d+$/.test(v);
  if (dom !== "*" || month !== "*") return null;
  const step = /^\*\/(\d+)$/.exec(minute);
  if (step && hour === "*" && dow === "*") return `every ${plural(+step[1], "minute")}`;
  if (minute === "*" && hour === "*" && dow === "*") return "every minute";
  if (num(minute) && hour === "*" && dow === "*") return `hourly at :${minute.padStart(2, "0")}`;
  if (!num(minute) || !num(hour)) return null;
  const at = `${hour.padStart(2, "0")}:${minute.padStart(2, "0")}`;
  if (dow === "*") return `daily at ${at}`;
  if (dow === "1-5") return `weekdays at ${at}`;
  if (num(dow) && +dow <= 7) return `${DAYS[+dow % 7]} at ${at}`;
  return null;
}

function timing(s) {
  if (s.cron_expr) {
    const words = cronInWords(s.cron_expr);
    const zone = s.timezone || "UTC";
    return { text: `${words || "cron"} (${zone})`, detail: s.cron_expr };
  }
  if (s.interval_seconds) return { text: `every ${spanInWords(s.interval_seconds)}`, detail: "" };
  if (s.run_at !== null && s.run_at !== undefined) {
    return { text: "once", detail: utc(s.run_at) };
  }
  return { text: "on demand", detail: "" };
}

function utc(epoch) {
  if (epoch === null || epoch === undefined) return "";
  const date = new Date(epoch * 1000);
  // To the second: a slot's fraction of a second is noise on a screen.
  return Number.isNaN(date.getTime()) ? "" : date.toISOString().replace(/\.\d+Z$/, "Z");
}

function local(epoch) {
  if (epoch === null || epoch === undefined) return "";
  const date = new Date(epoch * 1000);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString(undefined, LOCAL_FORMAT);
}

function duration(ms) {
  if (ms === null || ms === undefined) return "";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${spanInWords(ms / 1000)}`;
}

// -- building the page -------------------------------------------------------------------------

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function badge(td, status) {
  td.textContent = "";
  if (!status) return;
  const span = document.createElement("span");
  span.className = `status status-${status.toLowerCase()}`;
  span.textContent = status;
  td.appendChild(span);
}

function button(label, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = className;
  b.addEventListener("click", (event) => {
    event.stopPropagation(); // a button in a row is not a click on the row
    onClick().catch(report);
  });
  return b;
}

function pager(nav, meta, page, onPage) {
  nav.hidden = meta.total_pages <= 1;
  nav.querySelector(".info").textContent =
    `page ${page} of ${Math.max(meta.total_pages, 1)} (${meta.total_count} in all)`;
  const prev = nav.querySelector(".prev");
  const next = nav.querySelector(".next");
  prev.disabled = page <= 1;
  next.disabled = page >= meta.total_pages;
  prev.onclick = () => onPage(page - 1);
  next.onclick = () => onPage(page + 1);
}

function scheduleRow(s) {
  const row = document.createElement("tr");
  row.dataset.id = s.id;
  row.tabIndex = 0;
  if (state.open && state.open.id === s.id) row.classList.add("selected");
  cell(row, s.name, "name");
  const t = timing(s);
  const when = cell(row, t.text);
  if (t.detail) {
    const code = document.createElement("code");
    code.textContent = t.detail;
    when.append(" ", code);
  }
  const next = cell(row, "", "next-run");
  if (utc(s.next_run_at)) {
    const iso = document.createElement("div");
    iso.textContent = utc(s.next_run_at);
    const mine = document.createElement("div");
    mine.className = "local";
    mine.textContent = local(s.next_run_at);
    next.append(iso, mine);
  } else {
    next.textContent = "—";
  }
  badge(cell(row, "", "last-status"), s.last_status);
  const enabled = cell(row, s.enabled ? "yes" : "no", "enabled");
  if (!s.enabled && s.disabled_reason) enabled.title = s.disabled_reason;
  const actions = cell(row, "", "actions");
  const verb = s.enabled ? "disable" : "enable";
  actions.appendChild(
    button(s.enabled ? "Disable" : "Enable", verb, async () => {
      await api(`/schedules/${encodeURIComponent(s.id)}/${verb}`, "POST");
      say(`${s.name}: ${verb}d.`);
      await loadSchedules();
    }),
  );
  const trigger = button("Trigger", "trigger", async () => {
    await api(`/schedules/${encodeURIComponent(s.id)}/trigger`, "POST");
    say(`${s.name}: a run is queued.`);
    openRuns(s);
    await loadSchedules();
  });
  trigger.disabled = !s.enabled;
  if (!s.enabled) trigger.title = "Enable it before triggering";
  actions.appendChild(trigger);
  const open = () => openRuns(s);
  row.addEventListener("click", open);
  row.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target === row) open();
  });
  return row;
}

async function loadSchedules() {
  const params = new URLSearchParams({ limit: PAGE_SIZE, page: state.page });
  if (state.q) params.set("q", state.q);
  const answer = await api(`/schedules?${params}`);
  if (answer.meta.total_pages > 0 && state.page > answer.meta.total_pages) {
    state.page = answer.meta.total_pages; // the last page went away (deletes, a filter)
    return loadSchedules();
  }
  showMain();
  const body = $("#schedule-table tbody");
  body.replaceChildren(...answer.data.map(scheduleRow));
  $("#schedules-empty").hidden = answer.data.length > 0;
  $("#schedules-empty").textContent = state.q ? `No schedule's name contains “${state.q}”.`
    : "No schedules.";
  pager($("#schedule-pager"), answer.meta, state.page, (page) => {
    state.page = page;
    loadSchedules().catch(report);
  });
}

function runRow(r) {
  const row = document.createElement("tr");
  row.dataset.id = r.id;
  badge(cell(row, "", "run-status"), r.status);
  cell(row, r.trigger, "trigger");
  cell(row, utc(r.scheduled_for) || "—", "slot"); // none for a manual trigger
  const started = cell(row, utc(r.triggered_at), "started");
  started.title = local(r.triggered_at);
  cell(row, duration(r.duration_ms), "duration");
  cell(row, r.error || "", "error-text");
  return row;
}

async function loadRuns() {
  const open = state.open;
  const generation = state.generation;
  const params = new URLSearchParams({ limit: PAGE_SIZE, page: state.runsPage });
  const answer = await api(`/schedules/${encodeURIComponent(open.id)}/runs?${params}`);
  if (generation !== state.generation) return; // another schedule opened meanwhile
  $("#run-table tbody").replaceChildren(...answer.data.map(runRow));
  $("#runs-empty").hidden = answer.data.length > 0;
  pager($("#run-pager"), answer.meta, state.runsPage, (page) => {
    state.runsPage = page;
    loadRuns().catch(report);
  });
}

// One poll after another (never two at once): the next is set once this one has answered.
function schedulePoll(generation) {
  state.poll = setTimeout(async () => {
    if (generation !== state.generation) return;
    try {
      await Promise.all([loadRuns(), loadSchedules()]);
    } catch (error) {
      report(error);
      if (error instanceof Unauthorized) return;
    }
    if (generation === state.generation) schedulePoll(generation);
  }, POLL_MS);
}

function openRuns(s) {
  closeRuns();
  state.open = { id: s.id, name: s.name };
  state.runsPage = 1;
  $("#runs-name").textContent = s.name;
  $("#runs").hidden = false;
  for (const row of document.querySelectorAll("#schedule-table tbody tr")) {
    row.classList.toggle("selected", row.dataset.id === s.id);
  }
  $("#run-table tbody").replaceChildren();
  const generation = state.generation;
  loadRuns().catch(report).finally(() => schedulePoll(generation));
}

function closeRuns() {
  state.generation += 1;
  clearTimeout(state.poll);
  state.open = null;
  $("#runs").hidden = true;
  for (const row of document.querySelectorAll("#schedule-table tbody tr.selected")) {
    row.classList.remove("selected");
  }
}

// -- sign-in -----------------------------------------------------------------------------------

function showLogin(error) {
  closeRuns();
  $("#schedules").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  if (error !== null) $("#login-error").textContent = error;
  $("#token").focus();
}

function showMain() {
  $("#login").hidden = true;
  $("#schedules").hidden = false;
  $("#logout").hidden = sessionStorage.getItem(TOKEN_KEY) === null;
}

async function showServer() {
  // /info is open: the page can name the server before anyone signs in.
  try {
    const response = await fetch("/info", { cache: "no-store" });
    if (!response.ok) return;
    const info = await response.json();
    $("#server").textContent = `${info.name} ${info.version}`;
  } catch (error) {
    // The name is a courtesy; the schedules below say whether the server answers.
  }
}

function start() {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    $("#login-error").textContent = "";
    loadSchedules().catch(report);
  });
  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("");
  });
  $("#close-runs").addEventListener("click", closeRuns);
  let typing = null;
  $("#filter").addEventListener("input", (event) => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.q = event.target.value.trim();
      state.page = 1;
      loadSchedules().catch(report);
    }, FILTER_DELAY_MS);
  });
  showServer();
  loadSchedules().catch(report);
}

start();
