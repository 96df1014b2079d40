// app.js — the chat page: one socket, one joined room at a time.
//
// The socket (phoenix-lite) reconnects and rejoins by itself; this file only
// reacts: it renders history and live messages, presence and typing, the
// connection state, and notices when the room restarts (its generation went
// up across a rejoin), the server restarted (it went down: generations count
// per server run), the room reloads its code or reports a script error.
//
// It is a chat client: it sends `new_msg`, which only chat rooms take. A room
// of another kind (poll:demo) is joined to show what it answers and
// broadcasts, with a panel saying so instead of a composer that can only fail.

import { Socket, Presence } from "/static/phoenix-lite.js";
import { MessageLog } from "/static/message-log.js";
import * as view from "/static/chat-view.js";
import {
  DEFAULT_TOPIC, cleanHandle, loadHandle, saveHandle, parseTopic,
  recentRooms, rememberRoom, topicFromLocation, urlForTopic,
} from "/static/chat-prefs.js";

const $ = (id) => document.getElementById(id);
const dom = {
  roomForm: $("room-form"), roomInput: $("room-input"), roomError: $("room-error"), recentData: $("recent-rooms"),
  recentList: $("recent-list"), handleForm: $("handle-form"), handleInput: $("handle-input"), handleError: $("handle-error"),
  status: $("status"), statusConn: $("status-conn"), statusRoomState: $("status-room-state"), statusRoom: $("status-room"),
  statusGeneration: $("status-generation"), statusVersion: $("status-version"), statusTransport: $("status-transport"),
  kill: $("kill-button"), notices: $("notices"), scroller: $("messages-scroller"), messages: $("messages"),
  empty: $("messages-empty"), typing: $("typing"), composer: $("composer"), input: $("composer-input"),
  send: $("send-button"), composerError: $("composer-error"), people: $("people"), peopleCount: $("people-count"),
  kindPanel: $("kind-panel"), kindTitle: $("kind-title"), kindText: $("kind-text"), kindState: $("kind-state"),
  kindEvents: $("kind-events"), skipLink: document.querySelector(".skip-link"),
};

// The kinds whose rooms take `new_msg {text}` (rooms-js/chat.js).
const CHAT_KINDS = new Set(["chat"]);
const MAX_KIND_EVENTS = 20;

const MAX_TEXT = 2000;
const TYPING_REFRESH_MS = 2000; // the server clears typing after 5 s without one
const TYPING_IDLE_MS = 4000;

const pageParams = new URLSearchParams(location.search);
const forcedLongPoll = pageParams.get("transport") === "longpoll";
let handle = loadHandle();
let room = null; // the room this tab shows: see enterRoom()
let unread = 0;
// The last generation this tab saw of each room: a channel the server closed
// (it shuts down) is joined afresh, and the next generation is compared
// with this one.
const seenGenerations = new Map();
const typing = { sent: false, lastSentAt: 0, idleTimer: null };

// A server that requires connection tokens (docs/operations.md, Security) names the
// user from the token: open the page as /?token=<token>.
const pageToken = pageParams.get("token");

const socket = new Socket("/socket", {
  params: () => (pageToken ? { user: handle, token: pageToken } : { user: handle }),
  transport: forcedLongPoll ? "longpoll" : "websocket",
  // A WebSocket that cannot open within this falls back to long-poll.
  longPollFallbackMs: forcedLongPoll ? 0 : 2500,
});
socket.onStatus(renderStatus);

// ---- rooms -----------------------------------------------------------------

/** Leaves the current room (if any) and joins `topic`. */
function enterRoom(topic, { updateUrl = true } = {}) {
  if (room && room.topic === topic && room.channel.state !== "closed") return;
  if (room) {
    setTyping(false);
    room.leaving = true;
    if (room.channel.state !== "closed") room.channel.leave();
  }
  const channel = socket.channel(topic, {});
  const kind = topic.split(":")[0];
  const current = {
    topic, channel, presence: new Presence(channel), log: new MessageLog(),
    generation: null, version: null, kind, state: "joining", error: null, leaving: false,
    chat: CHAT_KINDS.has(kind), events: [],
  };
  room = current;
  const mine = () => room === current;
  renderKindPanel();

  channel.on("new_msg", (msg) => { if (mine()) addMessage(msg); });
  channel.on("room_info", (info) => { if (mine()) onRoomInfo(info); });
  channel.on("room_reloaded", (info) => { if (mine()) onRoomReloaded(info); });
  channel.on("script_error", (err) => { if (mine()) onScriptError(err); });
  channel.on("storage", (s) => { if (mine()) onStorage(s); });
  channel.onError(() => {
    if (!mine()) return;
    current.state = "rejoining";
    typing.sent = false;
    renderStatus();
    renderPresence();
  });
  channel.onClose(() => {
    if (!mine() || current.leaving) return;
    // Closed by the server (shutdown, or this tab joined twice): come back
    // with a fresh channel once things settle.
    current.state = "closed";
    renderStatus();
    view.notify(dom.notices, { key: "closed", kind: "info", text: `The server closed ${topic}; joining again…`, timeoutMs: 8000 });
    setTimeout(() => { if (mine()) enterRoom(topic, { updateUrl: false }); }, 2000);
  });
  current.presence.onSync(() => { if (mine()) renderPresence(); });

  channel.join()
    .receive("ok", (reply) => {
      if (!mine()) return;
      current.state = "joined";
      current.error = null;
      typing.sent = false;
      view.dismiss(dom.notices, "join-error");
      renderRecent(rememberRoom(topic));
      if (!current.chat) dom.kindState.textContent = JSON.stringify(reply ?? null, null, 2);
      current.log.merge(reply && reply.messages);
      renderLog({ stick: true });
      renderStatus();
      renderPresence();
    })
    .receive("error", (reply) => {
      if (!mine()) return;
      current.state = "refused";
      current.error = (reply && reply.reason) || "join refused";
      view.notify(dom.notices, { key: "join-error", kind: "error", text: `Cannot join ${topic}: ${current.error}`, detail: "retrying in a moment" });
      renderStatus();
      renderPresence();
    })
    .receive("timeout", () => {
      if (!mine()) return;
      current.state = "rejoining";
      renderStatus();
    });

  dom.roomInput.value = topic;
  document.title = `${topic} · roomhost`;
  if (updateUrl && topicFromLocation() !== topic) history.pushState({ topic }, "", urlForTopic(topic));
  renderRecent(recentRooms());
  renderLog({ stick: true });
  renderPresence();
  renderStatus();
}

function onRoomInfo(info) {
  const before = room.generation ?? seenGenerations.get(room.topic) ?? null;
  room.kind = info.kind ?? room.kind;
  room.version = info.version ?? room.version;
  if (typeof info.generation === "number") {
    if (before !== null && info.generation > before) {
      view.notify(dom.notices, { key: "restart", kind: "restart", text: `room restarted — generation ${info.generation}` });
    } else if (before !== null && info.generation < before) {
      // Generations count per server run: going down means a new server.
      view.notify(dom.notices, {
        key: "restart", kind: "restart",
        text: `The server restarted — ${room.topic} is at generation ${info.generation} again`,
        detail: `it was at generation ${before}; the room came back from its saved state`,
      });
    }
    room.generation = info.generation;
    seenGenerations.set(room.topic, info.generation);
  }
  if (info.storage) onStorage({ available: false, ...info.storage });
  renderStatus();
}

function onRoomReloaded(info) {
  room.version = info.version ?? room.version;
  if (typeof info.generation === "number") room.generation = info.generation;
  view.notify(dom.notices, { key: "reload", kind: "reload", text: `room code reloaded (v${info.version})` });
  renderStatus();
}

// The room's disk refuses writes: messages are refused until it heals (the
// server probes it by itself); the history stays readable.
function onStorage(storage) {
  if (storage.available) {
    view.dismiss(dom.notices, "storage");
    view.notify(dom.notices, { key: "storage-ok", kind: "info", text: "The room's storage is back; messages are accepted again.", timeoutMs: 6000 });
    return;
  }
  view.notify(dom.notices, {
    key: "storage", kind: "error",
    text: storage.state === "stalled" ? "The room's disk is stalled: new messages are refused for now." : "The room's storage refuses writes: new messages are refused for now.",
    detail: `${storage.cause ?? "unknown cause"} — it heals by itself when the disk does`,
  });
}

function onScriptError(err) {
  const where = [err.file, err.line, err.column].filter((x) => x !== undefined && x !== null).join(":");
  view.notify(dom.notices, {
    key: "script-error", kind: "error",
    text: `Script error${err.kind ? ` in the ${err.kind} code` : ""}: ${err.message ?? "unknown error"}`,
    // The host refuses broken code and keeps the previous version running.
    detail: `${where ? `${where} — ` : ""}the room keeps running its previous code`,
  });
}

// ---- rooms that are not chat rooms ------------------------------------------

// Host and presence events every room sends; the rest are the room's own.
const HOST_EVENTS = new Set(["phx_reply", "phx_error", "phx_close", "room_info", "room_reloaded", "script_error", "storage", "presence_state", "presence_diff", "kicked"]);

socket.onMessage(({ topic, event, payload }) => {
  if (!room || room.chat || topic !== room.topic || HOST_EVENTS.has(event)) return;
  room.events.push({ event, payload, at: Date.now() });
  if (room.events.length > MAX_KIND_EVENTS) room.events.shift();
  renderKindEvents();
});

function renderKindPanel() {
  const chat = room.chat;
  dom.kindPanel.hidden = chat;
  dom.scroller.hidden = !chat;
  dom.composer.hidden = !chat;
  dom.typing.hidden = !chat;
  dom.skipLink.hidden = !chat; // it leads to the composer
  document.body.dataset.roomKind = room.kind;
  if (chat) return;
  dom.kindTitle.textContent = `${room.topic} is a “${room.kind}” room`;
  dom.kindText.textContent = `This page is a chat client: it sends chat messages (new_msg), which only chat: rooms take. `
    + `A ${room.kind} room takes its own events (rooms-js/${room.kind}.js lists them at its top). `
    + "Below is what it answered this tab's join and what it broadcasts; the dashboard shows its state and console.";
  dom.kindState.textContent = "joining…";
  renderKindEvents();
}

function renderKindEvents() {
  if (!room.events.length) {
    dom.kindEvents.replaceChildren(Object.assign(document.createElement("li"), { className: "muted", textContent: "No broadcasts since this tab joined." }));
    return;
  }
  dom.kindEvents.replaceChildren(...room.events.map(({ event, payload, at }) => {
    const item = document.createElement("li");
    const time = Object.assign(document.createElement("time"), { className: "msg-time", textContent: view.formatTime(at, { seconds: true }) });
    const name = Object.assign(document.createElement("span"), { className: "mono", textContent: event });
    const body = Object.assign(document.createElement("pre"), { className: "mono", textContent: JSON.stringify(payload) });
    item.append(time, " ", name, body);
    return item;
  }));
}

// ---- messages --------------------------------------------------------------

function addMessage(msg) {
  const how = room.log.add(msg);
  if (!how) return;
  // Appending is enough unless the log also dropped its oldest message.
  const appendOnly = how === "append" && dom.messages.children.length === room.log.size - 1;
  renderLog({ appendOnly, stick: msg.user === handle });
  if (document.hidden) {
    unread += 1;
    document.title = `(${unread}) ${room.topic} · roomhost`;
  }
}

function renderLog(opts = {}) {
  const list = room ? room.log.sorted : [];
  view.renderMessages(dom.scroller, dom.messages, dom.empty, list, handle, { ...opts, appendOnly: opts.appendOnly && list.length > 0 });
}

function showComposerError(text) {
  dom.composerError.textContent = text;
  dom.composerError.hidden = !text;
  dom.input.setAttribute("aria-invalid", text ? "true" : "false");
}

function sendMessage() {
  if (!room.chat) return;
  const text = dom.input.value.trim();
  if (room.state === "refused") return showComposerError(`not sent: you are not in ${room.topic} (${room.error})`);
  if (!text) return showComposerError("message is blank");
  if (text.length > MAX_TEXT) return showComposerError(`message is too long (at most ${MAX_TEXT} characters)`);
  showComposerError("");
  setTyping(false);
  dom.input.value = "";
  // A failed send puts the text back, unless the user already typed anew.
  const restore = (reason) => {
    if (dom.input.value === "") dom.input.value = text;
    showComposerError(reason);
  };
  room.channel.push("new_msg", { text })
    .receive("error", (reply) => restore((reply && reply.reason) || "message refused"))
    .receive("timeout", () => restore("not sent: no answer from the server — press Enter to retry"));
}

// ---- presence and typing -----------------------------------------------------

function renderPresence() {
  // Outside the room the last list is out of date: dim it while rejoining,
  // drop it when the join is refused.
  const refused = room && room.state === "refused";
  const entries = room && !refused ? room.presence.list((user, presence) => ({ user, metas: presence.metas })) : [];
  const people = view.summarizePresence(entries);
  view.renderPeople(dom.people, dom.peopleCount, people, handle, refused ? "You are not in this room." : undefined);
  dom.people.classList.toggle("stale", !!room && room.state !== "joined");
  dom.typing.textContent = view.typingSentence(people.filter((p) => p.typing && p.user !== handle).map((p) => p.user));
}

function pushTyping(value) {
  if (!room || !room.channel.canPush()) return;
  room.channel.push("presence_update", { typing: value });
  typing.sent = value;
  typing.lastSentAt = Date.now();
}

function setTyping(on) {
  clearTimeout(typing.idleTimer);
  if (on) {
    if (!typing.sent || Date.now() - typing.lastSentAt >= TYPING_REFRESH_MS) pushTyping(true);
    typing.idleTimer = setTimeout(() => setTyping(false), TYPING_IDLE_MS);
  } else if (typing.sent) {
    pushTyping(false);
  }
}

// ---- status ----------------------------------------------------------------

const CONN_LABEL = { connecting: "connecting", open: "connected", reconnecting: "reconnecting", closed: "offline" };
// After this many failed attempts in a row (about 2 s of backoff) the server
// is taken as unreachable; the socket keeps retrying every few seconds.
const OFFLINE_AFTER_ATTEMPTS = 7;

function connectionLabel() {
  if (navigator.onLine === false) return "offline";
  if (socket.status === "reconnecting" && socket.failedAttempts >= OFFLINE_AFTER_ATTEMPTS) return "offline";
  return CONN_LABEL[socket.status] || socket.status;
}

function renderStatus() {
  const conn = connectionLabel();
  dom.statusConn.textContent = conn;
  // For tests and styling: the same states as data attributes on <body>.
  document.body.dataset.conn = conn;
  document.body.dataset.roomState = room ? room.state : "";
  dom.status.dataset.state = conn === "connected" && room && room.state !== "joined" ? "joining" : conn;
  dom.statusRoomState.textContent = !room ? "" : room.state === "joined" ? "in" : room.state;
  dom.statusRoomState.title = room && room.error ? room.error : "";
  dom.statusRoom.textContent = room ? room.topic : "";
  dom.statusGeneration.textContent = room && room.generation !== null ? String(room.generation) : "–";
  dom.statusVersion.textContent = room && room.version !== null && room.version !== undefined ? `v${room.version}` : "–";
  dom.statusTransport.hidden = socket.transportName !== "longpoll";
  document.body.dataset.transport = socket.transportName;
  dom.statusTransport.textContent = "long-poll";
  dom.kill.setAttribute("aria-label", room ? `Kill room ${room.topic} (simulates a crash)` : "Kill room");
  dom.send.disabled = !room || room.state === "refused";
  dom.empty.textContent = room && room.state === "refused"
    ? `You are not in ${room.topic}: ${room.error}.`
    : "No messages yet. Say hello!";
}

function renderRecent(list) {
  dom.recentData.replaceChildren(...list.map((topic) => Object.assign(document.createElement("option"), { value: topic })));
  dom.recentList.replaceChildren(...list.map((topic) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chip";
    button.textContent = topic;
    if (room && topic === room.topic) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => enterRoom(topic));
    item.append(button);
    return item;
  }));
}

// ---- admin action -----------------------------------------------------------

async function killRoom() {
  if (!room) return;
  const topic = room.topic;
  // Killing simulates a crash for everyone in the room: ask first.
  if (!window.confirm(`Kill ${topic}? Every tab in the room sees it crash and rejoin (its state is kept).`)) return;
  dom.kill.disabled = true;
  const headers = {};
  const token = sessionStorage.getItem("roomhost.adminToken");
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const resp = await fetch(`/api/rooms/${encodeURIComponent(topic)}/kill`, { method: "POST", headers });
    if (resp.status === 401 || resp.status === 403) {
      view.notify(dom.notices, { key: "kill", kind: "error", text: "Killing a room is an admin action: this server wants the admin token. Open the dashboard with ?token=… in this tab first." });
    } else if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      view.notify(dom.notices, { key: "kill", kind: "error", text: `Kill failed: ${body.reason || `HTTP ${resp.status}`}` });
    } else {
      const body = await resp.json().catch(() => ({}));
      view.notify(dom.notices, { key: "kill", kind: "info", text: `Killed ${topic}; generation ${body.generation ?? "?"} is running.`, timeoutMs: 6000 });
    }
  } catch (error) {
    view.notify(dom.notices, { key: "kill", kind: "error", text: `Kill failed: ${error.message}` });
  } finally {
    dom.kill.disabled = false;
  }
}

// ---- wiring ----------------------------------------------------------------

function showFieldError(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}

dom.roomForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const { topic, error } = parseTopic(dom.roomInput.value);
  showFieldError(dom.roomError, error);
  dom.roomInput.setAttribute("aria-invalid", error ? "true" : "false");
  if (topic) {
    enterRoom(topic);
    dom.input.focus();
  }
});

dom.handleForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const next = cleanHandle(dom.handleInput.value);
  showFieldError(dom.handleError, next ? "" : "Your name cannot be blank.");
  if (!next || next === handle) return;
  setTyping(false);
  handle = next;
  dom.handleInput.value = handle;
  saveHandle(handle);
  // The user travels as a connect parameter: reconnect, the channel rejoins.
  socket.disconnect();
  socket.connect();
  view.notify(dom.notices, { key: "handle", kind: "info", text: `You are now ${handle}.`, timeoutMs: 4000 });
});

for (const [input, current] of [[dom.roomInput, () => (room ? room.topic : "")], [dom.handleInput, () => handle]]) {
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") input.value = current();
  });
}

dom.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
});
dom.input.addEventListener("input", () => {
  if (dom.composerError.textContent) showComposerError("");
  setTyping(dom.input.value.trim() !== "");
});
dom.input.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    dom.input.value = "";
    showComposerError("");
    setTyping(false);
  }
});
dom.input.addEventListener("blur", () => setTyping(false));
dom.kill.addEventListener("click", killRoom);

window.addEventListener("popstate", () => {
  const { topic } = parseTopic(topicFromLocation() || DEFAULT_TOPIC);
  if (topic) enterRoom(topic, { updateUrl: false });
});
window.addEventListener("online", () => {
  renderStatus();
  if (socket.status !== "open") {
    socket.disconnect();
    socket.connect();
  }
});
window.addEventListener("offline", renderStatus);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && unread > 0 && room) {
    unread = 0;
    document.title = `${room.topic} · roomhost`;
  }
});

// ---- start -----------------------------------------------------------------

dom.handleInput.value = handle;
const requested = parseTopic(topicFromLocation() || DEFAULT_TOPIC);
if (requested.error) showFieldError(dom.roomError, `The address names an invalid room. ${requested.error}`);
socket.connect();
enterRoom(requested.topic || DEFAULT_TOPIC, { updateUrl: false });
// Show the canonical address (readable colon, the room actually joined).
if (`${location.pathname}${location.search}` !== urlForTopic(room.topic)) {
  history.replaceState({ topic: room.topic }, "", `${urlForTopic(room.topic)}${location.hash}`);
}
