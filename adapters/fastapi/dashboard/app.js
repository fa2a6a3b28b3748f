// The operators' dashboard: schedules and their runs, read and changed through this server's
// REST routes with the operator's token. The token lives in sessionStorage (this tab only) and
// goes out in the Authorization header, never in a URL. Values are put in the page as text
// (textContent), never as markup: a schedule's name or a run's error is data, not HTML.
"use strict";

const TOKEN_KEY = "leasecron.token";
const POLL_MS = 2000; // an open schedule's runs are read again this often
const CLUSTER_POLL_MS = 5000; // the cluster panel is read again this often
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
  detail: null, // the run_id whose session and trace are shown
  detailGeneration: 0,
  clusterPoll: null,
  clusterOn: false,
  clusterGeneration: 0, // bumped when the panel starts or stops: an older loop ends
};

const $ = (selector) => document.querySelector(selector);
// The SVG namespace, taken from an <svg> the HTML parser made, so no address is written here.
const SVG_NS = () => $("#timeline").namespaceURI;

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

function local(epoch, timeZone) {
  // The viewer's zone, or the one given (a schedule's).
  if (epoch === null || epoch === undefined) return "";
  const date = new Date(epoch * 1000);
  if (Number.isNaN(date.getTime())) return "";
  const format = timeZone ? { ...LOCAL_FORMAT, timeZone } : LOCAL_FORMAT;
  return date.toLocaleString(undefined, format);
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
    if (s.timezone && s.timezone !== "UTC") {
      // The time the schedule itself speaks of: "02:00 in Europe/Berlin".
      const zone = document.createElement("div");
      zone.className = "zone";
      zone.textContent = `${local(s.next_run_at, s.timezone)} (${s.timezone})`;
      next.append(zone);
    }
  } else {
    next.textContent = "—";
  }
  const last = cell(row, "", "last-status");
  badge(last, s.last_status);
  if (s.consecutive_failures > 0) {
    const streak = document.createElement("div");
    streak.className = "failures";
    streak.textContent = `${s.consecutive_failures} failed in a row`;
    last.append(streak);
  }
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
  if (r.run_id) {
    row.classList.add("has-detail");
    row.tabIndex = 0;
    row.dataset.runId = r.run_id;
    if (state.detail === r.run_id) row.classList.add("selected");
    const open = () => openDetail(r).catch(report);
    row.addEventListener("click", open);
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter") open();
    });
  }
  return row;
}

async function loadRuns() {
  const open = state.open;
  const generation = state.generation;
  const params = new URLSearchParams({ limit: PAGE_SIZE, page: state.runsPage });
  const answer = await api(`/schedules/${encodeURIComponent(open.id)}/runs?${params}`);
  if (generation !== state.generation) return; // another schedule opened meanwhile
  $("#run-table tbody").replaceChildren(...answer.data.map(runRow));
  drawTimeline(answer.data);
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
  $("#timeline").replaceChildren();
  $("#timeline-block").hidden = true;
  const generation = state.generation;
  loadRuns().catch(report).finally(() => schedulePoll(generation));
}

function closeRuns() {
  closeDetail();
  state.generation += 1;
  clearTimeout(state.poll);
  state.open = null;
  $("#runs").hidden = true;
  for (const row of document.querySelectorAll("#schedule-table tbody tr.selected")) {
    row.classList.remove("selected");
  }
}

// -- the run timeline --------------------------------------------------------------------------

const TIMELINE = { width: 960, height: 78, pad: 18, axis: 46 };
const TIMELINE_KINDS = new Set(["success", "failed", "timeout", "skipped", "lease_lost"]);

function svg(tag, attributes, parent) {
  const node = document.createElementNS(SVG_NS(), tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (parent) parent.appendChild(node);
  return node;
}

function svgText(parent, text, attributes) {
  svg("text", attributes, parent).textContent = text;
}

function runEnd(r) {
  if (r.completed_at !== null && r.completed_at !== undefined) return r.completed_at;
  return null;
}

function known(value) {
  return value !== null && value !== undefined && Number.isFinite(value);
}

function runTitle(r) {
  const lines = [`${r.status} (${r.trigger}${r.attempt > 1 ? `, attempt ${r.attempt}` : ""})`];
  lines.push(`slot: ${utc(r.scheduled_for) || "none (not from a slot)"}`);
  lines.push(`started: ${utc(r.triggered_at) || "not yet"}`);
  if (known(r.scheduled_for) && known(r.triggered_at)) {
    lines.push(`started ${duration((r.triggered_at - r.scheduled_for) * 1000)} after its slot`);
  }
  if (known(r.duration_ms)) lines.push(`took ${duration(r.duration_ms)}`);
  if (r.status_code) lines.push(`HTTP ${r.status_code}`);
  if (r.error) lines.push(r.error);
  return lines.join("\n");
}

// Every run of the page on one axis: a tick at its slot, a mark at its start joined to the tick
// by a line (the lag), the mark coloured by status; a retry is a diamond.
function drawTimeline(runs) {
  const box = $("#timeline");
  const { width, height, pad, axis } = TIMELINE;
  const placed = runs.filter((r) => known(r.triggered_at) || known(r.scheduled_for));
  $("#timeline-block").hidden = placed.length === 0;
  box.replaceChildren();
  if (placed.length === 0) return;
  const times = placed.flatMap((r) => [r.scheduled_for, r.triggered_at, runEnd(r)]).filter(known);
  let lo = Math.min(...times);
  let hi = Math.max(...times);
  if (hi - lo < 1) { lo -= 0.5; hi += 0.5; } // one instant: a one-second axis around it
  const x = (t) => (pad + ((t - lo) / (hi - lo)) * (width - 2 * pad)).toFixed(2);
  box.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg("line", { class: "tl-axis", x1: pad, y1: axis, x2: width - pad, y2: axis }, box);
  svgText(box, utc(lo), { class: "tl-label", x: pad, y: height - 6 });
  svgText(box, utc(hi), { class: "tl-label", x: width - pad, y: height - 6, "text-anchor": "end" });
  // Oldest first in the drawing, so the newest mark is on top where marks overlap.
  for (const r of [...placed].reverse()) {
    const kind = TIMELINE_KINDS.has(r.status) ? r.status : "other";
    const g = svg("g", { class: `tl-run tl-${kind}`, "data-id": r.id, "data-status": r.status,
      "data-trigger": r.trigger }, box);
    svg("title", {}, g).textContent = runTitle(r); // the hover text
    const start = known(r.triggered_at) ? r.triggered_at : null;
    if (known(r.scheduled_for)) {
      const sx = x(r.scheduled_for);
      svg("line", { class: "tl-slot", x1: sx, y1: axis - 6, x2: sx, y2: axis + 10 }, g);
      if (start !== null) {
        svg("line", { class: "tl-lag", x1: sx, y1: axis - 18, x2: x(start), y2: axis - 18 }, g);
      }
    }
    const mx = Number(x(start !== null ? start : r.scheduled_for));
    const my = axis - 18;
    if (r.trigger === "retry") {
      const points = [[mx, my - 7], [mx + 7, my], [mx, my + 7], [mx - 7, my]];
      svg("polygon", { class: "tl-mark tl-retry", points: points.map((p) => p.join(",")).join(" ") }, g);
    } else {
      svg("circle", { class: "tl-mark", cx: mx, cy: my, r: 6 }, g);
    }
  }
}

// -- a run's session and trace -----------------------------------------------------------------

// Seconds since the epoch from the server's ISO times, keeping the microseconds Date drops.
function isoSeconds(text) {
  if (!text) return null;
  const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$/.exec(text);
  if (!m) return null;
  const whole = Date.parse(m[1] + (m[3] || "Z"));
  return Number.isNaN(whole) ? null : whole / 1000 + (m[2] ? parseFloat(m[2]) : 0);
}

function fact(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
  list.append(dt, dd);
}

function showSession(session, runId) {
  const facts = $("#session-facts");
  facts.replaceChildren();
  fact(facts, "session", session.session_id);
  const noun = session.session_type;
  fact(facts, noun, session[`${noun}_id`]);
  fact(facts, "user", session.user_id);
  fact(facts, "created", utc(session.created_at));
  fact(facts, "updated", utc(session.updated_at));
  fact(facts, "runs", session.runs.length);
  $("#session-runs tbody").replaceChildren(...session.runs.map((run) => {
    const row = document.createElement("tr");
    row.dataset.runId = run.run_id;
    if (run.run_id === runId) row.classList.add("selected");
    cell(row, run.run_id, "run-id");
    badge(cell(row, "", "run-status"), run.status);
    cell(row, run.metrics.started_at || "", "started");
    const took = run.metrics.duration;
    cell(row, known(took) ? duration(took * 1000) : "", "duration");
    return row;
  }));
  const hasState = session.session_state && Object.keys(session.session_state).length > 0;
  $("#session-state-block").hidden = !hasState;
  $("#session-state").textContent = hasState ? JSON.stringify(session.session_state, null, 2) : "";
}

const WATERFALL = { width: 960, row: 24, label: 300, gap: 8, durationRoom: 90 };

// A span often takes less than a millisecond: its duration keeps two decimals below 10 ms.
function spanDuration(seconds) {
  const ms = seconds * 1000;
  return ms < 10 ? `${ms.toFixed(2)} ms` : duration(ms);
}

function flattenSpans(spans, depth = 0, out = []) {
  for (const span of spans) {
    out.push({ span, depth });
    flattenSpans(span.children || [], depth + 1, out);
  }
  return out;
}

function spanTitle(span) {
  const lines = [`${span.name} (${span.kind}): ${span.status}`];
  lines.push(`start ${span.start}`);
  if (span.end) lines.push(`end ${span.end}`);
  for (const [key, value] of Object.entries(span.attributes || {})) {
    lines.push(`${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`);
  }
  if (span.error) lines.push(`error: ${span.error}`);
  return lines.join("\n");
}

// One row per span, depth-first (workflow, its steps, their agent calls and CEL decisions): the
// name indented by depth on the left, a bar offset by its start and as long as its duration.
function drawWaterfall(spans) {
  const box = $("#waterfall");
  box.replaceChildren();
  const rows = flattenSpans(spans);
  $("#trace-empty").hidden = rows.length > 0;
  box.hidden = rows.length === 0;
  if (rows.length === 0) return;
  const { width, row, label, gap, durationRoom } = WATERFALL;
  const starts = rows.map(({ span }) => isoSeconds(span.start));
  const ends = rows.map(({ span }, i) => isoSeconds(span.end) ?? starts[i]);
  const t0 = Math.min(...starts);
  const span = Math.max(Math.max(...ends) - t0, 1e-6);
  const area = width - label - gap - durationRoom;
  const height = rows.length * row + 4;
  box.setAttribute("viewBox", `0 0 ${width} ${height}`);
  rows.forEach(({ span: s, depth }, i) => {
    const y = i * row + 2;
    const g = svg("g", { class: `wf-span wf-${s.kind} wf-status-${s.status}`, "data-depth": depth,
      "data-kind": s.kind, "data-name": s.name }, box);
    svg("title", {}, g).textContent = spanTitle(s);
    if (i % 2 === 1) svg("rect", { class: "wf-stripe", x: 0, y, width, height: row }, g);
    svgText(g, s.name, { class: "wf-name", x: 6 + depth * 16, y: y + row * 0.68 });
    svgText(g, s.kind, { class: "wf-kind", x: label - 6, y: y + row * 0.68, "text-anchor": "end" });
    const bx = label + gap + ((starts[i] - t0) / span) * area;
    const bw = Math.max(((ends[i] - starts[i]) / span) * area, 2); // an instant still shows
    svg("rect", { class: "wf-bar", x: bx.toFixed(2), y: y + 5, width: bw.toFixed(2),
      height: row - 10, rx: 2 }, g);
    const took = known(s.duration) ? spanDuration(s.duration) : "running";
    svgText(g, took, { class: "wf-duration", x: (bx + bw + 6).toFixed(2), y: y + row * 0.68 });
  });
}

async function openDetail(r) {
  state.detailGeneration += 1;
  const generation = state.detailGeneration;
  state.detail = r.run_id;
  for (const row of document.querySelectorAll("#run-table tbody tr")) {
    row.classList.toggle("selected", row.dataset.runId === r.run_id);
  }
  $("#detail-run-id").textContent = r.run_id;
  $("#detail-message").textContent = "";
  $("#session-facts").replaceChildren();
  $("#session-runs tbody").replaceChildren();
  $("#waterfall").replaceChildren();
  $("#trace-empty").hidden = true;
  $("#run-detail").hidden = false;
  const [session, trace] = await Promise.allSettled([
    r.session_id ? api(`/sessions/${encodeURIComponent(r.session_id)}`) : Promise.resolve(null),
    api(`/traces/${encodeURIComponent(r.run_id)}`),
  ]);
  if (generation !== state.detailGeneration) return; // another run opened meanwhile
  const problems = [];
  for (const result of [session, trace]) {
    if (result.status === "rejected") {
      if (result.reason instanceof Unauthorized) return;
      problems.push(result.reason.message || String(result.reason));
    }
  }
  if (session.status === "fulfilled" && session.value) showSession(session.value, r.run_id);
  if (trace.status === "fulfilled") drawWaterfall(trace.value.spans);
  $("#detail-message").textContent = problems.join("; ");
}

function closeDetail() {
  state.detailGeneration += 1;
  state.detail = null;
  $("#run-detail").hidden = true;
  for (const row of document.querySelectorAll("#run-table tbody tr.selected")) {
    row.classList.remove("selected");
  }
}

// -- the cluster -------------------------------------------------------------------------------

function seconds(value) {
  return known(value) ? duration(value * 1000) : "—";
}

function listItems(list, items) {
  list.replaceChildren(...items.map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }));
}

async function loadCluster(generation) {
  const status = await api("/status");
  if (generation !== state.clusterGeneration) return; // signed out meanwhile
  $("#cluster").hidden = false;
  $("#cluster-at").textContent = `as of ${utc(status.now)}`;
  $("#cluster-overdue").textContent = String(status.overdue.length);
  $("#cluster-failures").textContent = String(status.failures.length);
  $("#cluster-failures-label").textContent =
    `failures, last ${spanInWords(status.window_seconds)}`;
  $("#cluster-lag-p50").textContent = seconds(status.fire_lag_seconds.p50);
  $("#cluster-lag-p99").textContent = seconds(status.fire_lag_seconds.p99);
  $("#cluster-schedules").textContent =
    `${status.schedules.total} (${status.schedules.enabled})`;
  $("#replica-table tbody").replaceChildren(...status.replicas.map((r) => {
    const row = document.createElement("tr");
    row.dataset.replica = r.replica;
    cell(row, r.replica, "replica");
    cell(row, String(r.leases), "leases");
    cell(row, String(r.in_flight), "in-flight");
    cell(row, String(r.fires), "fires");
    const last = cell(row, utc(r.last_fire) || "—", "last-fire");
    last.title = local(r.last_fire);
    return row;
  }));
  $("#replicas-empty").hidden = status.replicas.length > 0;
  listItems($("#overdue-list"), status.overdue.map(
    (s) => `overdue: ${s.name}, due ${utc(s.due_at)} (${seconds(s.late)} late)`));
  listItems($("#failure-list"), status.failures.slice(0, 5).map((f) => {
    const code = f.status_code ? ` HTTP ${f.status_code}` : "";
    return `${f.status}: ${f.schedule} at ${utc(f.at)}${code}${f.error ? `: ${f.error}` : ""}`;
  }));
}

// Its own loop, one read after another, from sign-in until a 401 or sign-out.
function pollCluster() {
  clearTimeout(state.clusterPoll);
  const generation = ++state.clusterGeneration;
  state.clusterOn = true;
  const tick = async () => {
    try {
      await loadCluster(generation);
    } catch (error) {
      if (error instanceof Unauthorized) return;
      report(error);
    }
    if (generation === state.clusterGeneration) {
      state.clusterPoll = setTimeout(tick, CLUSTER_POLL_MS);
    }
  };
  tick();
}

function stopCluster() {
  clearTimeout(state.clusterPoll);
  state.clusterGeneration += 1;
  state.clusterOn = false;
  $("#cluster").hidden = true;
}

// -- sign-in -----------------------------------------------------------------------------------

function showLogin(error) {
  closeRuns();
  stopCluster();
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
  if (!state.clusterOn) pollCluster(); // signed in: the cluster panel starts
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
  $("#close-detail").addEventListener("click", closeDetail);
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
