// The operator's page (/status): every captured table's activity and every notifier's health.
//
// Facts come from GET /status.json (the notifier reads them from the database: per-table counts,
// log size, oldest change, and the heartbeat row of every notifier replica), refreshed every
// REFRESH_MS. Between refreshes the page counts changes live through rowcast.js: it subscribes to
// every captured table, adds what arrives to the table's log rows and to the chart's last bar, and
// shows the live rate over the last LIVE_WINDOW_MS.
//
// Token mode: /status.json needs a token with the metrics grant. The page takes it from the URL
// fragment (/status#token=…, never sent to the server nor logged) or from the form it shows on a
// 401/403, keeps it in sessionStorage for this tab, and uses it for rowcast.js too.
//
//   document.body[data-ready="true"]   once the first status is rendered
//   tr[data-table="schema.name"] td[data-field=…]  and  tr[data-notifier=id] td[data-field=…]

import { connect } from "./rowcast.js";

const REFRESH_MS = 2000;
const LIVE_WINDOW_MS = 10_000;
const TOKEN_KEY = "rowcast.status.token";
const SVG = "http://www.w3.org/2000/svg";

const el = {
  live: document.getElementById("live"),
  summary: document.getElementById("summary"),
  tables: document.querySelector("#tables tbody"),
  notifiers: document.querySelector("#notifiers tbody"),
  noTables: document.getElementById("no-tables"),
  noNotifiers: document.getElementById("no-notifiers"),
  chartHeading: document.getElementById("chart-heading"),
  tokenForm: document.getElementById("token-form"),
  tokenInput: document.getElementById("token"),
  tokenError: document.getElementById("token-error"),
  pageError: document.getElementById("page-error"),
};

// -- token ----------------------------------------------------------------------------------

function takeTokenFromFragment() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const token = hash.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}
takeTokenFromFragment();
let token = sessionStorage.getItem(TOKEN_KEY);

el.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  token = el.tokenInput.value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  el.tokenForm.hidden = true;
  refresh();
});

// -- formatting -----------------------------------------------------------------------------

function bytes(n) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

const ms = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(1)} ms`);
const percent = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)} %`);

// -- live counting through rowcast.js -------------------------------------------------------

let connection = null;
const live = new Map(); // "schema.name" -> {sub, total, sinceFetch, times: []}

function ensureConnection() {
  if (connection) return;
  connection = connect(location.origin, { token, getToken: async () => token });
  connection.onStatus((status) => {
    el.live.dataset.state = status;
    el.live.textContent = status;
  });
}

function follow(table) {
  if (live.has(table.table)) return;
  const entry = { sub: null, total: 0, sinceFetch: 0, times: [] };
  live.set(table.table, entry);
  entry.sub = connection.subscribe({
    schema: table.schema,
    table: table.name,
    onChange() {
      entry.total += 1;
      entry.sinceFetch += 1;
      entry.times.push(Date.now());
      renderLive(table.table);
    },
  });
}

function liveRate(entry) {
  const since = Date.now() - LIVE_WINDOW_MS;
  while (entry.times.length && entry.times[0] < since) entry.times.shift();
  return entry.times.length / (LIVE_WINDOW_MS / 1000);
}

// -- rendering ------------------------------------------------------------------------------

const facts = new Map(); // "schema.name" -> the last table facts from /status.json

function cell(row, field, text, numeric = false) {
  let td = row.querySelector(`td[data-field="${field}"]`);
  if (!td) {
    td = document.createElement("td");
    td.dataset.field = field;
    if (numeric) td.className = "num";
    row.append(td);
  }
  if (td.textContent !== text) td.textContent = text;
  return td;
}

function chart(td, counts) {
  const width = 150;
  const height = 28;
  let svg = td.querySelector("svg");
  if (!svg) {
    svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height));
    svg.setAttribute("role", "img");
    td.append(svg);
  }
  svg.replaceChildren();
  const top = Math.max(1, ...counts);
  const step = width / counts.length;
  const base = document.createElementNS(SVG, "line");
  base.setAttribute("x1", "0");
  base.setAttribute("x2", String(width));
  base.setAttribute("y1", String(height - 0.5));
  base.setAttribute("y2", String(height - 0.5));
  svg.append(base);
  counts.forEach((n, i) => {
    const h = n === 0 ? 0 : Math.max(1, Math.round((n / top) * (height - 2)));
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("x", String(i * step + 1));
    rect.setAttribute("y", String(height - h));
    rect.setAttribute("width", String(Math.max(1, step - 2)));
    rect.setAttribute("height", String(h));
    if (i === counts.length - 1) rect.setAttribute("class", "now");
    svg.append(rect);
  });
  svg.setAttribute("aria-label", `changes per minute, oldest first: ${counts.join(", ")}`);
  svg.dataset.counts = counts.join(",");
}

function tableRow(name) {
  let row = el.tables.querySelector(`tr[data-table="${CSS.escape(name)}"]`);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.table = name;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    row.append(th);
    el.tables.append(row);
  }
  return row;
}

function renderTable(t) {
  const entry = live.get(t.table) ?? { total: 0, sinceFetch: 0, times: [] };
  const row = tableRow(t.table);
  const counts = [...t.per_minute];
  counts[counts.length - 1] += entry.sinceFetch;
  // Over the last 60 s (the chart's last bar); the Live column has the rate over the last 10 s.
  cell(row, "rate", (counts[counts.length - 1] / 60).toFixed(2), true);
  chart(cell(row, "chart", ""), counts);
  cell(row, "live", `${entry.total} (${liveRate(entry).toFixed(1)}/s)`, true);
  cell(row, "log_rows", String(t.log_rows + entry.sinceFetch), true);
  cell(row, "log_bytes", bytes(t.log_bytes), true);
  cell(row, "oldest", t.oldest_age_seconds === null ? "none" : `${duration(t.oldest_age_seconds)} ago`);
  cell(row, "retention", duration(t.retention_seconds));
  cell(row, "wake_mode", t.wake_mode);
}

function renderLive(name) {
  const t = facts.get(name);
  if (t) renderTable(t);
}

function renderNotifier(n, self) {
  let row = el.notifiers.querySelector(`tr[data-notifier="${CSS.escape(n.id)}"]`);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.notifier = n.id;
    const th = document.createElement("th");
    th.scope = "row";
    row.append(th);
    el.notifiers.append(row);
  }
  const label = `${n.id}${n.worker !== null && n.worker !== undefined ? ` (worker ${n.worker})` : ""}${n.id === self ? " · answered" : ""}`;
  row.querySelector("th").textContent = label;
  const state = !n.alive ? "down" : n.listening && n.reading ? "listening" : "degraded";
  const stateCell = cell(row, "state", state);
  stateCell.className = `state-${state}`;
  const problems = n.problems && Object.keys(n.problems).length ? Object.entries(n.problems).map(([k, v]) => `${k}: ${v}`).join("; ") : "";
  stateCell.title = problems;
  cell(row, "clients", String(n.clients ?? "–"), true);
  cell(row, "subscriptions", String(n.subscriptions ?? "–"), true);
  cell(row, "lag_p50", ms(n.lag_p50_ms), true);
  cell(row, "lag_p99", ms(n.lag_p99_ms), true);
  cell(row, "notify_queue", percent(n.notify_queue_usage), true);
  cell(row, "last_read", n.last_read_age_seconds == null ? "never" : `${duration(n.last_read_age_seconds)} ago`);
  cell(row, "seen", `${duration(n.seen_ago_seconds)} ago`);
}

function render(status) {
  el.summary.textContent =
    `Wake-up mode ${status.wake_mode} · change log ${bytes(status.log_total_bytes)} · ` +
    `retention ${duration(status.retention_seconds)} · last prune ${status.last_prune ?? "never"} · ` +
    `NOTIFY queue ${percent(status.notify_queue_usage)} · read at ${new Date(status.at).toLocaleTimeString()}`;
  el.chartHeading.textContent = `Last ${status.minutes} min`;
  const seenTables = new Set();
  for (const t of status.tables) {
    seenTables.add(t.table);
    facts.set(t.table, t);
    const entry = live.get(t.table);
    if (entry) entry.sinceFetch = 0;
    renderTable(t);
    follow(t);
  }
  for (const row of el.tables.querySelectorAll("tr[data-table]")) {
    if (!seenTables.has(row.dataset.table)) row.remove();
  }
  el.noTables.hidden = status.tables.length > 0;
  const seenNotifiers = new Set(status.notifiers.map((n) => n.id));
  for (const n of status.notifiers) renderNotifier(n, status.self);
  for (const row of el.notifiers.querySelectorAll("tr[data-notifier]")) {
    if (!seenNotifiers.has(row.dataset.notifier)) row.remove();
  }
  el.noNotifiers.hidden = status.notifiers.length > 0;
  document.body.dataset.ready = "true";
}

// -- the refresh loop -----------------------------------------------------------------------

let timer = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = await fetch("/status.json", { headers, cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401 || response.status === 403) {
      el.tokenForm.hidden = false;
      el.tokenError.hidden = !token;
      el.tokenError.textContent = body.message ?? `HTTP ${response.status}`;
      el.live.dataset.state = "offline";
      el.live.textContent = "token needed";
      return; // no retry until a token is given
    }
    if (!response.ok) throw new Error(body.message ?? `HTTP ${response.status}`);
    el.pageError.hidden = true;
    ensureConnection();
    render(body);
  } catch (error) {
    el.pageError.hidden = false;
    el.pageError.textContent = `Status unavailable: ${error.message ?? error}`;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

refresh();
