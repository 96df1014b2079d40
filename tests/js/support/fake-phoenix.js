// A tiny stand-in Phoenix server for the unit tests of static/phoenix-lite.js.
//
// It exists to provoke what the real server rarely does on cue: a missed
// heartbeat reply, a crash at a chosen moment, a refused join, a long-poll
// session. It speaks just enough V2 protocol for that and is never used to
// test roomhost itself (tests/js/*.test.js start the real binary for that).

import http from "node:http";
import { WebSocketServer } from "ws";

export async function startFakePhoenix({ webSocket = true } = {}) {
  const conns = new Set();
  const sessions = new Map(); // long-poll token -> conn
  const state = { dropHeartbeats: false, frames: [], nextId: 1, joinsByTopic: new Map() };

  function makeConn(send) {
    const conn = { send, joins: new Map() }; // topic -> join_ref
    conns.add(conn);
    return conn;
  }

  function handleFrame(conn, text) {
    const [joinRef, ref, topic, event, payload] = JSON.parse(text);
    state.frames.push({ joinRef, ref, topic, event, payload });
    const reply = (status, response) => conn.send(JSON.stringify([joinRef, ref, topic, "phx_reply", { status, response }]));
    if (topic === "phoenix" && event === "heartbeat") {
      if (!state.dropHeartbeats) reply("ok", {});
      return;
    }
    if (event === "phx_join") {
      state.joinsByTopic.set(topic, (state.joinsByTopic.get(topic) || 0) + 1);
      if (topic.startsWith("refuse:")) return reply("error", { reason: "unknown room kind" });
      conn.joins.set(topic, joinRef);
      reply("ok", { messages: [] });
      conn.send(JSON.stringify([joinRef, null, topic, "room_info", { topic, generation: 1 }]));
      return;
    }
    if (conn.joins.get(topic) !== joinRef) return reply("error", { reason: "unmatched topic" });
    if (event === "phx_leave") {
      conn.joins.delete(topic);
      return reply("ok", {});
    }
    if (event === "silent") return; // never answered: for push timeouts
    if (event === "new_msg") {
      const msg = { id: state.nextId++, text: payload.text };
      for (const other of conns) {
        if (other.joins.has(topic)) other.send(JSON.stringify([null, null, topic, "new_msg", msg]));
      }
      return reply("ok", { id: msg.id });
    }
    reply("error", { reason: "unknown event" });
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname !== "/socket/longpoll") {
      res.writeHead(404).end();
      return;
    }
    const json = (body) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
    const token = url.searchParams.get("token");
    const conn = token && sessions.get(token);
    if (req.method === "GET" && !conn) {
      const newToken = `t${sessions.size + 1}-${Date.now()}`;
      const queue = [];
      const lpConn = makeConn((text) => { queue.push(text); lpConn.wake && lpConn.wake(); });
      lpConn.queue = queue;
      sessions.set(newToken, lpConn);
      return json({ status: 410, token: newToken });
    }
    if (!conn) return json({ status: 410, token: null });
    if (req.method === "POST") {
      let body = "";
      req.on("data", (chunk) => { body += chunk; });
      req.on("end", () => {
        for (const line of body.split("\n")) if (line) handleFrame(conn, line);
        json({ status: 200 });
      });
      return;
    }
    const flush = () => {
      conn.wake = null;
      clearTimeout(timer);
      const messages = conn.queue.splice(0);
      json(messages.length ? { status: 200, token, messages } : { status: 204, token });
    };
    const timer = setTimeout(flush, 500);
    if (conn.queue.length) flush();
    else conn.wake = flush;
  });

  // Without it, upgrades are refused: a network where only long-poll works.
  const wss = new WebSocketServer(webSocket ? { server, path: "/socket/websocket" } : { noServer: true });
  wss.on("connection", (ws) => {
    const conn = makeConn((text) => ws.readyState === ws.OPEN && ws.send(text));
    conn.ws = ws;
    ws.on("message", (data) => handleFrame(conn, String(data)));
    ws.on("close", () => conns.delete(conn));
  });

  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  return {
    state,
    url: `http://127.0.0.1:${port}`,
    endpoint: `ws://127.0.0.1:${port}/socket`,
    /** Every channel on `topic` gets phx_error and is dropped, as on a room crash. */
    crash(topic) {
      for (const conn of conns) {
        const joinRef = conn.joins.get(topic);
        if (joinRef === undefined) continue;
        conn.joins.delete(topic);
        conn.send(JSON.stringify([joinRef, joinRef, topic, "phx_error", {}]));
      }
    },
    /** Sends a frame to every connection, as is (for stale join_ref tests). */
    sendRaw(frame) {
      for (const conn of conns) conn.send(JSON.stringify(frame));
    },
    joinRefOf(topic) {
      for (const conn of conns) if (conn.joins.has(topic)) return conn.joins.get(topic);
      return undefined;
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
