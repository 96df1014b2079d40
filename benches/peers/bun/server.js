// The Bun peer of the side-by-side bench (benches/peers/run.sh): what a
// speed-minded user would run instead of roomhost. `Bun.serve` WebSockets
// with `ws.subscribe(topic)` / `server.publish(topic, frame)` (uWebSockets
// inside), speaking the Phoenix V2 subset `roomhost bench` uses, with the
// semantics of the floor (benches/peers/floor.rs) and of rooms-js/chat.js:
//
// - `phx_join` on any topic → `phx_reply` ok `{}`; `phx_leave` → ok `{}`.
// - `new_msg` `{text}` on a joined topic → the broadcast
//   `[null,null,topic,"new_msg",{id,user,text,at}]` to every member (the
//   sender too), serialized once, then the sender's `phx_reply` ok `{id}`.
// - `heartbeat` on `phoenix` → ok `{}`.
// - Anything else gets an error reply with a reason.
//
//   node_modules/@oven/bun-linux-x64/bin/bun server.js --port 4400
//
// It binds 127.0.0.1 only. No JS per room, no durability, no presence.

const portFlag = process.argv.indexOf("--port");
const port = portFlag >= 0 ? Number(process.argv[portFlag + 1]) : 4400;
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`--port must be a TCP port, not ${process.argv[portFlag + 1]}`);
  process.exit(2);
}

// topic → { nextId, members }: chat.js's message counter, and how many
// channels are joined (the room is forgotten when the last one leaves).
const rooms = new Map();

function reply(joinRef, ref, topic, status, response) {
  return JSON.stringify([joinRef, ref, topic, "phx_reply", { response, status }]);
}

function leave(ws, topic) {
  ws.unsubscribe(topic);
  ws.data.joined.delete(topic);
  const room = rooms.get(topic);
  if (room && --room.members === 0) rooms.delete(topic);
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req, server) {
    const url = new URL(req.url);
    if (url.pathname !== "/socket/websocket") {
      return new Response(`no such endpoint: ${url.pathname}\n`, { status: 404 });
    }
    if (!(url.searchParams.get("vsn") ?? "").startsWith("2.")) {
      return new Response("only vsn=2.0.0 (array frames) is spoken here\n", { status: 400 });
    }
    const data = { user: url.searchParams.get("user") ?? "anon", joined: new Set() };
    if (server.upgrade(req, { data })) return undefined;
    return new Response("expected a WebSocket upgrade\n", { status: 400 });
  },
  websocket: {
    // As roomhost: no compression, close a client that does not keep up.
    perMessageDeflate: false,
    closeOnBackpressureLimit: true,
    idleTimeout: 60,
    message(ws, text) {
      let frame;
      try {
        frame = JSON.parse(text);
      } catch (e) {
        frame = null;
      }
      if (!Array.isArray(frame) || frame.length !== 5 || typeof frame[2] !== "string") {
        ws.send(JSON.stringify([null, null, "phoenix", "phx_error", { reason: "malformed frame" }]));
        return;
      }
      const [joinRef, ref, topic, event, payload] = frame;
      if (topic === "phoenix" && event === "heartbeat") {
        ws.send(reply(joinRef, ref, topic, "ok", {}));
      } else if (event === "phx_join") {
        if (ws.data.joined.has(topic)) {
          ws.send(reply(joinRef, ref, topic, "error", { reason: "already joined" }));
          return;
        }
        ws.data.joined.add(topic);
        ws.subscribe(topic);
        const room = rooms.get(topic);
        if (room) room.members++;
        else rooms.set(topic, { nextId: 0, members: 1 });
        ws.send(reply(joinRef, ref, topic, "ok", {}));
      } else if (event === "phx_leave") {
        if (ws.data.joined.has(topic)) leave(ws, topic);
        ws.send(reply(joinRef, ref, topic, "ok", {}));
      } else if (event === "new_msg") {
        if (!ws.data.joined.has(topic)) {
          ws.send(reply(joinRef, ref, topic, "error", { reason: "unmatched topic" }));
          return;
        }
        const room = rooms.get(topic);
        const msg = {
          id: ++room.nextId,
          user: ws.data.user,
          text: String(payload?.text ?? "").slice(0, 4000),
          at: Date.now(),
        };
        // server.publish reaches every subscriber, the sender included.
        server.publish(topic, JSON.stringify([null, null, topic, "new_msg", msg]));
        ws.send(reply(joinRef, ref, topic, "ok", { id: msg.id }));
      } else {
        ws.send(reply(joinRef, ref, topic, "error", { reason: "unknown event" }));
      }
    },
    close(ws) {
      for (const topic of [...ws.data.joined]) leave(ws, topic);
    },
  },
});

console.error(`bun peer listening on ${server.hostname}:${server.port}`);
