// Long-poll with the official `phoenix` client's LongPoll transport against
// the real server: it shares rooms with WebSocket clients both ways, is
// reached by the fallback when a WebSocket cannot connect, and a session that
// stops polling leaves its rooms (its presence goes away).

import { test } from "node:test";
import assert from "node:assert/strict";
import { LongPoll, Presence } from "phoenix";
import { api } from "./support/roomhost.js";
import { join, replyOf, roomhostWithClients } from "./support/phoenix-client.js";
import { waitFor } from "./support/wait.js";

// A session with no request for this long expires (the default is 20 s).
const LONGPOLL_TIMEOUT_S = 1;

const { server, open } = roomhostWithClients({ args: ["--longpoll-timeout", String(LONGPOLL_TIMEOUT_S)] });
const openLongPoll = (user) => open(user, { transport: LongPoll });

test("a LongPoll client and a WebSocket client exchange messages in one room", async () => {
  const poller = await openLongPoll("polly");
  assert.equal(poller.transportName(poller.transport), "LongPoll");
  const socketeer = await open("wes");
  const { channel: lp } = await join(poller, "chat:js-longpoll");
  const { channel: ws } = await join(socketeer, "chat:js-longpoll");
  const atLp = [];
  const atWs = [];
  lp.on("new_msg", (msg) => atLp.push(msg));
  ws.on("new_msg", (msg) => atWs.push(msg));

  const fromLp = await replyOf(lp.push("new_msg", { text: "over long-poll" }));
  assert.equal(fromLp.status, "ok");
  const fromWs = await replyOf(ws.push("new_msg", { text: "over websocket" }));
  assert.equal(fromWs.status, "ok");

  for (const seen of [atLp, atWs]) {
    await waitFor(() => seen.length >= 2, { what: "both messages", timeoutMs: 15000 });
    assert.deepEqual(seen.map((m) => m.text), ["over long-poll", "over websocket"]);
    assert.deepEqual(seen.map((m) => m.user), ["polly", "wes"]);
  }
  assert.deepEqual(atLp.map((m) => m.id), [fromLp.response.id, fromWs.response.id]);
});

test("a message posted over HTTP reaches a LongPoll client", async () => {
  const poller = await openLongPoll("reader");
  const { channel } = await join(poller, "chat:js-longpoll-http");
  const seen = [];
  channel.on("new_msg", (msg) => seen.push(msg));
  const resp = await fetch(`${server.url}/api/rooms/chat:js-longpoll-http/messages`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ event: "new_msg", payload: { text: "posted" }, user: "curl" }),
    signal: AbortSignal.timeout(10000),
  });
  assert.equal(resp.status, 200);
  const { id } = await resp.json();
  const msg = await waitFor(() => seen.find((m) => m.id === id), { what: "the posted message", timeoutMs: 15000 });
  assert.deepEqual([msg.user, msg.text], ["curl", "posted"]);
});

test("a long-poll session that stops polling leaves, and its presence goes away", async () => {
  const topic = "chat:js-longpoll-expiry";
  const watcher = await open("watcher");
  const watched = watcher.channel(topic, {});
  const presence = new Presence(watched);
  assert.equal((await replyOf(watched.join(), "watcher join")).status, "ok");

  const poller = await openLongPoll("sleepy");
  await join(poller, topic);
  await waitFor(() => presence.list().some(({ metas }) => metas.length) && presence.list().length === 2,
    { what: "sleepy present", timeoutMs: 15000 });
  assert.deepEqual(presence.list((user) => user).sort(), ["sleepy", "watcher"]);
  const before = (await api(server, "GET", `/api/rooms/${topic}`)).body;
  assert.equal(before.channels, 2);

  // disconnect() stops polling without a word to the server (phoenix.js
  // sends no leave over long-poll): only the session timeout can tell.
  poller.disconnect();
  await waitFor(() => presence.list().length === 1, { what: "sleepy gone from presence", timeoutMs: 20000 });
  assert.deepEqual(presence.list((user) => user), ["watcher"]);
  const afterExpiry = (await api(server, "GET", `/api/rooms/${topic}`)).body;
  assert.equal(afterExpiry.channels, 1);
});

/** A WebSocket that can never connect, as behind a proxy that drops upgrades. */
class BlockedWebSocket {
  constructor() {
    this.readyState = 0;
    this.timer = setTimeout(() => {
      this.readyState = 3;
      if (this.onerror) this.onerror(new Error("blocked"));
      if (this.onclose) this.onclose({ code: 1006, reason: "blocked", wasClean: false });
    }, 100);
  }
  send() { throw new Error("not open"); }
  close() { clearTimeout(this.timer); this.readyState = 3; }
}

test("longPollFallbackMs falls back to long-poll when the WebSocket cannot connect", async () => {
  const socket = await open("fallback", { transport: BlockedWebSocket, longPollFallbackMs: 300 });
  await waitFor(() => socket.transport === LongPoll && socket.isConnected(), { what: "the long-poll fallback", timeoutMs: 15000 });
  const { channel, response } = await join(socket, "chat:js-fallback");
  assert.ok(Array.isArray(response.messages));
  const reply = await replyOf(channel.push("new_msg", { text: "via fallback" }));
  assert.equal(reply.status, "ok");
});
