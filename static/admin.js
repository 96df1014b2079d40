// admin.js — the /admin dashboard: polls the admin API every second and
// updates the rooms table in place (rows keyed by topic, so keyboard focus on
// a button survives the refresh), with kill/reset actions and the console of
// the selected room. All server text is rendered with textContent. Each
// room's Kill and Reset buttons sit in its first cell, next to the topic: on
// a phone that column stays put while the rest of the table scrolls under
// nothing, so every column can be read and the buttons are always in reach.

import { formatTime, formatFullTime } from "./time-format.js";

const POLL_MS = 1000;
const REQUEST_TIMEOUT_MS = 5000;
const TOKEN_KEY = "roomhost.adminToken";

const $ = (id) => document.getElementById(id);
const dom = {
  banner: $("banner"), actionStatus: $("action-status"), tokenForm: $("token-form"), tokenInput: $("token-input"),
  tokenClear: $("token-clear"), totalRooms: $("total-rooms"), totalConnections: $("total-connections"),
  totalRate: $("total-rate"), updated: $("updated"), body: $("rooms-body"), empty: $("rooms-empty"),
  count: $("rooms-count"), console: $("console"), consoleTopic: $("console-topic"),
  roomsTable: $("rooms-table"), clusterPanel: $("cluster-panel"), clusterBody: $("cluster-body"),
  clusterNode: $("cluster-node"), clusterError: $("cluster-error"),
};

const rows = new Map(); // topic -> { tr, cells, killButton, resetButton, selectButton }
let selected = null;
let lastConsoleKey = "";
let thisNode = null; // cluster mode: this node's name (from /api/cluster)

// ---- auth --------------------------------------------------------------------

function readToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
}
function writeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* this tab only then */ }
}

// A token in the address is taken once and removed from it (and from history).
{
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    writeToken(params.get("token"));
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
  }
}

class HttpError extends Error {
  constructor(status, body) {
    super(`HTTP ${status}${body ? `: ${body}` : ""}`);
    this.status = status;
  }
}

async function api(path, { method = "GET" } = {}) {
  const headers = { Accept: "application/json" };
  const token = readToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  try {
    const resp = await fetch(path, { method, headers, signal: controller.signal, cache: "no-store" });
    if (!resp.ok) {
      // The server answers errors as {"reason": "..."}.
      const body = await resp.text();
      let reason = body;
      try { reason = JSON.parse(body).reason ?? body; } catch { /* plain text */ }
      throw new HttpError(resp.status, String(reason).slice(0, 300));
    }
    return await resp.json();
  } catch (error) {
    if (error.name === "AbortError") throw new Error("the server did not answer in time");
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

const roomPath = (topic, suffix = "") => `/api/rooms/${encodeURIComponent(topic)}${suffix}`;

function explain(error) {
  if (error.status === 401 || error.status === 403) {
    return readToken()
      ? `Not authorised (HTTP ${error.status}): the admin token was refused. Check ROOMHOST_ADMIN_TOKEN and enter it again above.`
      : `Not authorised (HTTP ${error.status}): enter the admin token (the server's ROOMHOST_ADMIN_TOKEN) above, or open /admin?token=…. A server without a token answers loopback clients only.`;
  }
  if (error instanceof TypeError) return "Cannot reach the server (is it running?). Retrying every second.";
  return `The admin API failed: ${error.message}`;
}

function showBanner(text) {
  dom.banner.textContent = text || "";
  dom.banner.hidden = !text;
}

// ---- formatting ----------------------------------------------------------------

function formatBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "–";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

const num = (n) => (typeof n === "number" ? n.toLocaleString() : "–");
const text = (v) => (v === null || v === undefined || v === "" ? "–" : String(v));

function describeScriptError(err) {
  if (!err) return "";
  if (typeof err === "string") return err;
  const where = [err.file, err.line, err.column].filter((x) => x !== undefined && x !== null).join(":");
  return `${where ? `${where} ` : ""}${err.message ?? ""}`.trim();
}

// ---- rooms table ------------------------------------------------------------------

const COLUMNS = ["topic", "kind", "state", "node", "generation", "restarts", "channels", "users", "events_in", "js_memory", "journal_bytes", "version", "error"];
const NUMERIC = new Set(["generation", "restarts", "channels", "users", "events_in", "js_memory", "journal_bytes"]);

function button(label, className, ariaLabel, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = label;
  if (ariaLabel) b.setAttribute("aria-label", ariaLabel);
  b.addEventListener("click", onClick);
  return b;
}

function createRow(topic) {
  const tr = document.createElement("tr");
  tr.dataset.topic = topic;
  const cells = {};
  for (const column of COLUMNS) {
    const cell = document.createElement(column === "topic" ? "th" : "td");
    if (column === "topic") cell.scope = "row";
    if (NUMERIC.has(column)) cell.className = "num";
    cell.dataset.col = column;
    cells[column] = cell;
    tr.append(cell);
  }
  const selectButton = button(topic, "topic-button", `Show console of ${topic}`, () => select(topic));
  const killButton = button("Kill", "danger", `Kill ${topic}`, () => act(topic, "kill"));
  const resetButton = button("Reset", "secondary", `Reset ${topic}`, () => act(topic, "reset"));
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(killButton, resetButton);
  const topicCell = document.createElement("div");
  topicCell.className = "topic-cell";
  topicCell.append(selectButton, actions);
  cells.topic.append(topicCell);
  const stateBadge = document.createElement("span");
  cells.state.append(stateBadge);
  return { tr, cells, selectButton, killButton, resetButton, stateBadge };
}

function updateRow(row, room) {
  const c = row.cells;
  c.kind.textContent = text(room.kind);
  // A room whose storage refuses writes keeps running: say so next to its state.
  const storage = room.storage && typeof room.storage === "object" ? room.storage : null;
  // Cluster mode: a room another node runs is forwarded there from here.
  const forwarded = typeof room.node === "string" && thisNode !== null && room.node !== thisNode;
  row.stateBadge.textContent = forwarded
    ? "forwarded"
    : storage ? `${text(room.state)} · storage ${text(storage.state)}` : text(room.state);
  row.stateBadge.className = storage && !forwarded ? "state state-storage" : `state state-${forwarded ? "forwarded" : String(room.state).replace(/[^a-z]/g, "")}`;
  c.node.textContent = typeof room.node === "string" ? room.node : "–";
  c.generation.textContent = num(room.generation);
  c.restarts.textContent = num(room.restarts);
  c.channels.textContent = num(room.channels);
  c.users.textContent = num(room.users);
  c.events_in.textContent = num(room.events_in);
  c.js_memory.textContent = formatBytes(room.js_memory);
  c.journal_bytes.textContent = formatBytes(room.journal_bytes);
  if (room.compacts === false) {
    // DESIGN: a script without snapshot/restore never compacts its journal.
    const warning = document.createElement("span");
    warning.className = "warn-text";
    warning.textContent = "never compacted (no snapshot/restore)";
    c.journal_bytes.append(warning);
  }
  c.version.textContent = room.version === null || room.version === undefined || room.version === "" ? "–" : `v${room.version}`;
  const scriptError = describeScriptError(room.script_error);
  const storageError = storage ? `storage unavailable since ${formatTime(storage.since)}: ${text(storage.cause)}` : "";
  // last_error says what it is: a crash reason ("CPU budget exceeded"), the
  // failure ("crashed 6 times…"), a reset ("reset by an admin; it had…").
  c.error.textContent = storageError || scriptError || (room.last_error ?? "");
  c.error.className = storageError || scriptError || room.state === "failed" ? "error-cell" : "error-cell muted";
  const startedAt = typeof room.started_at === "number" ? new Date(room.started_at < 1e12 ? room.started_at * 1000 : room.started_at) : null;
  row.tr.title = startedAt ? `generation started ${formatFullTime(startedAt)}` : "";
  row.resetButton.hidden = room.state !== "failed";
  // A stopped or failed room has no task to kill (the API answers 404 or
  // 503): no button; a failed one has Reset instead.
  row.killButton.hidden = forwarded || room.state === "stopped" || room.state === "failed";
  const isSelected = room.topic === selected;
  row.tr.setAttribute("aria-selected", String(isSelected));
  row.selectButton.setAttribute("aria-pressed", String(isSelected));
}

function renderRooms(rooms) {
  const seen = new Set();
  const sorted = [...rooms].sort((a, b) => String(a.topic).localeCompare(String(b.topic)));
  let previous = null;
  for (const room of sorted) {
    const topic = String(room.topic);
    seen.add(topic);
    let row = rows.get(topic);
    if (!row) {
      row = createRow(topic);
      rows.set(topic, row);
    }
    updateRow(row, room);
    // Keep DOM order sorted without re-inserting rows that are in place
    // (moving a row would drop the focus of a button inside it).
    const expectedNext = previous ? previous.nextSibling : dom.body.firstChild;
    if (expectedNext !== row.tr) dom.body.insertBefore(row.tr, expectedNext);
    previous = row.tr;
  }
  for (const [topic, row] of rows) {
    if (!seen.has(topic)) {
      row.tr.remove();
      rows.delete(topic);
    }
  }
  dom.empty.hidden = rooms.length > 0;
  dom.count.textContent = rooms.length ? `(${rooms.length})` : "";
}

function renderTotals(totals = {}) {
  dom.totalRooms.textContent = num(totals.rooms);
  dom.totalConnections.textContent = num(totals.connections);
  dom.totalRate.textContent = typeof totals.messages_per_sec === "number" ? totals.messages_per_sec.toFixed(1) : "–";
  dom.updated.textContent = formatTime(new Date(), { seconds: true });
}

async function act(topic, action) {
  const row = rows.get(topic);
  const buttonEl = row && (action === "kill" ? row.killButton : row.resetButton);
  if (buttonEl) buttonEl.disabled = true;
  dom.actionStatus.textContent = `${action === "kill" ? "Killing" : "Resetting"} ${topic}…`;
  try {
    const result = await api(roomPath(topic, `/${action}`), { method: "POST" });
    dom.actionStatus.textContent = action === "kill"
      ? `Killed ${topic}: generation ${text(result.generation)} is running.`
      : `Reset ${topic}: now ${text(result.state)}.`;
  } catch (error) {
    dom.actionStatus.textContent = `${action === "kill" ? "Kill" : "Reset"} of ${topic} failed. ${explain(error)}`;
  } finally {
    if (buttonEl) buttonEl.disabled = false;
  }
}

// ---- console of the selected room ------------------------------------------------

function select(topic) {
  selected = topic;
  lastConsoleKey = "";
  dom.consoleTopic.textContent = `— ${topic}`;
  dom.console.replaceChildren();
  for (const [t, row] of rows) {
    row.tr.setAttribute("aria-selected", String(t === topic));
    row.selectButton.setAttribute("aria-pressed", String(t === topic));
  }
  pollConsole();
}

function renderConsole(lines) {
  const last = lines[lines.length - 1];
  const key = `${lines.length}|${last ? `${last.at}|${last.message}` : ""}`;
  if (key === lastConsoleKey) return;
  lastConsoleKey = key;
  const atBottom = dom.console.scrollHeight - dom.console.scrollTop - dom.console.clientHeight < 40;
  dom.console.replaceChildren(...lines.slice(-100).map((line) => {
    const item = document.createElement("li");
    const level = ["log", "info", "warn", "error"].includes(line.level) ? line.level : "log";
    item.className = `lvl-${level}`;
    const time = document.createElement("time");
    const at = typeof line.at === "number" ? new Date(line.at) : null;
    time.textContent = at ? formatTime(at, { seconds: true }) : "";
    if (at) time.dateTime = at.toISOString();
    const levelEl = document.createElement("span");
    levelEl.textContent = level;
    const message = document.createElement("span");
    message.className = "line-message";
    message.textContent = String(line.message ?? "");
    item.append(time, levelEl, message);
    return item;
  }));
  if (lines.length === 0) {
    const item = document.createElement("li");
    item.className = "muted";
    // The host writes crashes, failures and resets here too ([roomhost]).
    item.textContent = "No console output yet: the script has logged nothing and the room has not crashed.";
    dom.console.append(item);
  }
  if (atBottom) dom.console.scrollTop = dom.console.scrollHeight;
}

let consoleTimer = null;
async function pollConsole() {
  clearTimeout(consoleTimer);
  const topic = selected;
  if (!topic) return;
  try {
    const body = await api(roomPath(topic, "/console"));
    if (topic === selected) renderConsole(Array.isArray(body.lines) ? body.lines : []);
  } catch (error) {
    if (topic === selected) {
      lastConsoleKey = "";
      const item = document.createElement("li");
      item.className = "muted";
      item.textContent = error.status === 404 ? "This room has no console (yet)." : explain(error);
      dom.console.replaceChildren(item);
    }
  } finally {
    if (topic === selected) consoleTimer = setTimeout(pollConsole, POLL_MS);
  }
}

// ---- polling -------------------------------------------------------------------

async function pollRooms() {
  if (document.hidden) {
    setTimeout(pollRooms, POLL_MS);
    return;
  }
  try {
    const body = await api("/api/rooms");
    renderRooms(Array.isArray(body.rooms) ? body.rooms : []);
    renderTotals(body.totals);
    showBanner("");
  } catch (error) {
    showBanner(explain(error));
  } finally {
    setTimeout(pollRooms, POLL_MS);
  }
}

// ---- cluster mode ----------------------------------------------------------------

function renderCluster(body) {
  thisNode = typeof body.node === "string" ? body.node : null;
  dom.clusterPanel.hidden = false;
  dom.roomsTable.classList.add("clustered");
  dom.clusterNode.textContent = thisNode ? `— this is ${thisNode}` : "";
  dom.clusterError.hidden = true;
  const nodes = Array.isArray(body.nodes) ? body.nodes : [];
  dom.clusterBody.replaceChildren(...nodes.map((node) => {
    const tr = document.createElement("tr");
    const name = document.createElement("th");
    name.scope = "row";
    const url = typeof node.url === "string" && /^https?:\/\//.test(node.url) ? node.url : null;
    if (url) {
      const link = document.createElement("a");
      link.href = `${url.replace(/\/$/, "")}/admin`;
      link.rel = "noopener";
      link.textContent = text(node.name);
      link.title = `${url} — its own dashboard`;
      name.append(link);
    } else {
      name.textContent = text(node.name);
    }
    if (node.name === thisNode) name.append(" (this node)");
    const state = document.createElement("td");
    state.textContent = node.alive ? "alive" : "not alive";
    if (!node.alive) state.className = "node-dead";
    const cell = (value, className) => {
      const td = document.createElement("td");
      td.textContent = value;
      if (className) td.className = className;
      return td;
    };
    const seen = typeof node.last_seen === "number" ? new Date(node.last_seen) : null;
    const seenCell = cell(seen ? formatTime(seen, { seconds: true }) : "–", "muted");
    if (seen) seenCell.title = formatFullTime(seen);
    tr.append(name, state, cell(num(node.rooms), "num"), cell(num(node.connections), "num"), seenCell, cell(text(node.version)));
    return tr;
  }));
}

async function pollCluster() {
  try {
    renderCluster(await api("/api/cluster"));
  } catch (error) {
    // 404: one node, no cluster; nothing to show and nothing to poll.
    if (error.status === 404) return;
    if (!dom.clusterPanel.hidden) {
      dom.clusterError.textContent = `The cluster's nodes could not be read. ${explain(error)}`;
      dom.clusterError.hidden = false;
    }
  }
  setTimeout(pollCluster, POLL_MS * 2);
}

dom.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  writeToken(dom.tokenInput.value.trim());
  dom.tokenInput.value = "";
  dom.tokenInput.placeholder = readToken() ? "token saved for this tab" : "if the server needs one";
  dom.actionStatus.textContent = readToken() ? "Token saved for this tab." : "";
});
dom.tokenClear.addEventListener("click", () => {
  writeToken("");
  dom.tokenInput.placeholder = "if the server needs one";
  dom.actionStatus.textContent = "Token forgotten.";
});

if (readToken()) dom.tokenInput.placeholder = "token saved for this tab";
pollRooms();
pollCluster();
