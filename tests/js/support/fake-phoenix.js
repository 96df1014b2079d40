// A stand-in roomhost for the unit tests of static/phoenix-lite.js and for
// previewing the UI while the real server is not at hand.
//
// It exists to provoke what the real server rarely does on cue (a missed
// heartbeat reply, a crash at a chosen moment, a refused join, a long-poll
// session) and follows the server contract of the UI brief closely enough to
// click through the chat page and the dashboard. It is never used to test
// roomhost itself: tests/js/*.test.js and tests/e2e start the real binary.
//
//   node tests/js/support/fake-phoenix.js [port]   # serves static/ for a preview

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { WebSocketServer } from "ws";

const STATIC_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../static");
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css" };

export async function startFakePhoenix({ webSocket = true, serveStatic = false, port = 0 } = {}) {
  const conns = new Set();
  const sessions = new Map(); // long-poll token -> conn
  const rooms = new Map(); // topic -> room
  const state = { dropHeartbeats: false, frames: [], joinsByTopic: new Map() };

  function roomFor(topic) {
    if (!rooms.has(topic)) {
      rooms.set(topic, { topic, generation: 1, version: 1, restarts: 0, messages: [], nextId: 1, eventsIn: 0, console: [] });
    }
    return rooms.get(topic);
  }

  const members = (topic) => [...conns].filter((c) => c.joins.has(topic));
  const sendTo = (conn, frame) => conn.send(JSON.stringify(frame));
  const broadcast = (topic, event, payload) => { for (const c of members(topic)) sendTo(c, [null, null, topic, event, payload]); };
  const presenceOf = (conn, topic) => ({ [conn.user]: { metas: [conn.metas.get(topic)] } });

  function presenceState(topic) {
    const out = {};
    for (const c of members(topic)) (out[c.user] ||= { metas: [] }).metas.push(c.metas.get(topic));
    return out;
  }

  function dropMember(conn, topic) {
    const meta = conn.metas.get(topic);
    conn.joins.delete(topic);
    conn.metas.delete(topic);
    clearTimeout(conn.typingTimers.get(topic));
    if (meta) broadcast(topic, "presence_diff", { joins: {}, leaves: { [conn.user]: { metas: [meta] } } });
  }

  function updateMeta(conn, topic, patch) {
    const old = conn.metas.get(topic);
    if (!old) return;
    const meta = { ...old, ...patch, phx_ref: randomUUID(), phx_ref_prev: old.phx_ref };
    conn.metas.set(topic, meta);
    broadcast(topic, "presence_diff", { joins: { [conn.user]: { metas: [meta] } }, leaves: { [conn.user]: { metas: [old] } } });
  }

  function makeConn(send, user) {
    const conn = { send, user: user || "anonymous", joins: new Map(), metas: new Map(), typingTimers: new Map() };
    conns.add(conn);
    return conn;
  }

  function closeConn(conn) {
    for (const topic of [...conn.joins.keys()]) dropMember(conn, topic);
    conns.delete(conn);
  }

  function handleFrame(conn, text) {
    const [joinRef, ref, topic, event, payload] = JSON.parse(text);
    state.frames.push({ joinRef, ref, topic, event, payload });
    const reply = (status, response) => sendTo(conn, [joinRef, ref, topic, "phx_reply", { status, response }]);
    if (topic === "phoenix" && event === "heartbeat") {
      if (!state.dropHeartbeats) reply("ok", {});
      return;
    }
    if (event === "phx_join") {
      state.joinsByTopic.set(topic, (state.joinsByTopic.get(topic) || 0) + 1);
      if (!topic.startsWith("chat:")) return reply("error", { reason: "unknown room kind" });
      if (conn.joins.has(topic)) {
        sendTo(conn, [conn.joins.get(topic), conn.joins.get(topic), topic, "phx_close", {}]);
        dropMember(conn, topic);
      }
      const room = roomFor(topic);
      conn.joins.set(topic, joinRef);
      conn.metas.set(topic, { phx_ref: randomUUID(), online_at: Date.now() });
      reply("ok", { messages: room.messages.slice(-50) });
      sendTo(conn, [joinRef, null, topic, "room_info", { topic, kind: "chat", generation: room.generation, version: room.version }]);
      sendTo(conn, [joinRef, null, topic, "presence_state", presenceState(topic)]);
      for (const other of members(topic)) if (other !== conn) sendTo(other, [null, null, topic, "presence_diff", { joins: presenceOf(conn, topic), leaves: {} }]);
      return;
    }
    if (conn.joins.get(topic) !== joinRef) return reply("error", { reason: "unmatched topic" });
    const room = roomFor(topic);
    room.eventsIn += 1;
    if (event === "phx_leave") {
      dropMember(conn, topic);
      return reply("ok", {});
    }
    if (event === "silent") return; // never answered: for push timeouts
    if (event === "presence_update") {
      updateMeta(conn, topic, { typing: payload.typing === true });
      clearTimeout(conn.typingTimers.get(topic));
      if (payload.typing === true) conn.typingTimers.set(topic, setTimeout(() => updateMeta(conn, topic, { typing: false }), 5000));
      return reply("ok", {});
    }
    if (event === "new_msg") {
      const text = String(payload.text ?? "").trim();
      if (!text) return reply("error", { reason: "message is blank" });
      if (text.length > 2000) return reply("error", { reason: "message is too long" });
      const msg = { id: room.nextId++, user: conn.user, text, at: Date.now() };
      room.messages.push(msg);
      room.console.push({ at: msg.at, level: "log", message: `new_msg from ${conn.user}` });
      broadcast(topic, "new_msg", msg);
      return reply("ok", { id: msg.id });
    }
    reply("error", { reason: "unknown event" });
  }

  /** Every channel on `topic` gets phx_error and is dropped, as on a room crash. */
  function crash(topic) {
    const room = roomFor(topic);
    room.generation += 1;
    room.restarts += 1;
    room.console.push({ at: Date.now(), level: "warn", message: `killed; generation ${room.generation}` });
    for (const conn of members(topic)) {
      const joinRef = conn.joins.get(topic);
      conn.joins.delete(topic);
      conn.metas.delete(topic);
      sendTo(conn, [joinRef, joinRef, topic, "phx_error", {}]);
    }
    return room.generation;
  }

  function handleApi(req, res, url, json) {
    const match = url.pathname.match(/^\/api\/rooms(?:\/([^/]+)(?:\/(kill|reset|console))?)?$/);
    if (!match) return json(404, { error: "not found" });
    const [, rawTopic, action] = match;
    if (!rawTopic) {
      const list = [...rooms.values()].map((room) => ({
        topic: room.topic, kind: "chat", state: "running", generation: room.generation, restarts: room.restarts,
        channels: members(room.topic).length, users: new Set(members(room.topic).map((c) => c.user)).size,
        events_in: room.eventsIn, started_at: Date.now(), js_memory: 300000, journal_bytes: 1234,
        version: room.version, script_error: null, last_error: null,
      }));
      return json(200, { rooms: list, totals: { rooms: list.length, connections: conns.size, messages_per_sec: 0 } });
    }
    const topic = decodeURIComponent(rawTopic);
    if (action === "kill" && req.method === "POST") return json(200, { topic, generation: crash(topic) });
    if (action === "console") return json(200, { lines: roomFor(topic).console.slice(-100) });
    return json(404, { error: "not found" });
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    const json = (status, body) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    if (url.pathname.startsWith("/api/")) return handleApi(req, res, url, json);
    if (serveStatic && req.method === "GET") {
      const file = url.pathname === "/" ? "index.html" : url.pathname === "/admin" ? "admin.html"
        : url.pathname.startsWith("/static/") ? path.basename(url.pathname) : null;
      if (file && fs.existsSync(path.join(STATIC_DIR, file))) {
        res.writeHead(200, { "content-type": TYPES[path.extname(file)] || "application/octet-stream", "cache-control": "no-store" });
        return res.end(fs.readFileSync(path.join(STATIC_DIR, file)));
      }
    }
    if (url.pathname !== "/socket/longpoll") return res.writeHead(404).end();
    const reply = (body) => json(200, body);
    const token = url.searchParams.get("token");
    const conn = token && sessions.get(token);
    if (req.method === "GET" && !conn) {
      const newToken = `t${sessions.size + 1}-${Date.now()}`;
      const lpConn = makeConn((text) => { lpConn.queue.push(text); if (lpConn.wake) lpConn.wake(); }, url.searchParams.get("user"));
      lpConn.queue = [];
      sessions.set(newToken, lpConn);
      return reply({ status: 410, token: newToken });
    }
    if (!conn) return reply({ status: 410, token: null });
    if (req.method === "POST") {
      let body = "";
      req.on("data", (chunk) => { body += chunk; });
      req.on("end", () => {
        for (const line of body.split("\n")) if (line) handleFrame(conn, line);
        reply({ status: 200 });
      });
      return;
    }
    const flush = () => {
      conn.wake = null;
      clearTimeout(timer);
      const messages = conn.queue.splice(0);
      reply(messages.length ? { status: 200, token, messages } : { status: 204, token });
    };
    const timer = setTimeout(flush, 500);
    if (conn.queue.length) flush();
    else conn.wake = flush;
  });

  // Without it, upgrades are refused: a network where only long-poll works.
  const wss = new WebSocketServer(webSocket ? { server, path: "/socket/websocket" } : { noServer: true });
  wss.on("connection", (ws, req) => {
    const user = new URL(req.url, "http://x").searchParams.get("user");
    const conn = makeConn((text) => ws.readyState === ws.OPEN && ws.send(text), user);
    conn.ws = ws;
    ws.on("message", (data) => handleFrame(conn, String(data)));
    ws.on("close", () => closeConn(conn));
  });

  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  const actualPort = server.address().port;
  return {
    state,
    crash,
    url: `http://127.0.0.1:${actualPort}`,
    endpoint: `ws://127.0.0.1:${actualPort}/socket`,
    /** Sends a frame to every connection, as is (for stale join_ref tests). */
    sendRaw(frame) {
      for (const conn of conns) sendTo(conn, frame);
    },
    /** Tells every channel of `topic` that the code was reloaded. */
    reload(topic) {
      const room = roomFor(topic);
      room.version += 1;
      room.generation += 1;
      broadcast(topic, "room_reloaded", { version: room.version, generation: room.generation });
    },
    dropAllWebSockets() {
      for (const conn of conns) if (conn.ws) conn.ws.terminate();
    },
    async stop() {
      for (const client of wss.clients) client.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const fake = await startFakePhoenix({ serveStatic: true, port: Number(process.argv[2] || 0) });
  console.log(`fake roomhost listening on ${fake.url}`);
}
