// Unit tests of static/phoenix-lite.js (our browser client) against a fake
// Phoenix server that can misbehave on cue. Needs no roomhost binary.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Presence as OfficialPresence } from "phoenix";
import { Socket, Presence } from "../../static/phoenix-lite.js";
import { startFakePhoenix } from "./support/fake-phoenix.js";
import { sleep, waitFor, within } from "./support/wait.js";

let fake;
const sockets = [];

before(async () => { fake = await startFakePhoenix(); });
after(async () => {
  for (const socket of sockets) socket.disconnect();
  await fake.stop();
});

function connect(opts = {}, endpoint = fake.endpoint) {
  const socket = new Socket(endpoint, {
    WebSocket, params: { user: "tester" }, rejoinAfterMs: () => 50, ...opts,
  });
  sockets.push(socket);
  socket.connect();
  return socket;
}

const reply = (push) => within(new Promise((resolve) => {
  push.receive("ok", (r) => resolve({ status: "ok", response: r }))
    .receive("error", (r) => resolve({ status: "error", response: r }))
    .receive("timeout", () => resolve({ status: "timeout" }));
}), 5000, "a push reply");

test("joins, gets the join reply and the first push, and pushes with a reply", async () => {
  const socket = connect();
  const channel = socket.channel("chat:a");
  const infos = [];
  channel.on("room_info", (info) => infos.push(info));
  assert.deepEqual(await reply(channel.join()), { status: "ok", response: { messages: [] } });
  await waitFor(() => infos.length === 1, { what: "room_info" });
  assert.equal(socket.status, "open");
  const sent = await reply(channel.push("new_msg", { text: "hi" }));
  assert.equal(sent.status, "ok");
  assert.equal(typeof sent.response.id, "number");
});

test("a broadcast reaches a second socket; pushes before the join are buffered", async () => {
  const alice = connect();
  const bob = connect();
  const aliceChannel = alice.channel("chat:b");
  const bobChannel = bob.channel("chat:b");
  const seen = [];
  bobChannel.on("new_msg", (msg) => seen.push(msg.text));
  aliceChannel.join();
  const early = aliceChannel.push("new_msg", { text: "sent before joined" });
  await reply(bobChannel.join());
  assert.equal((await reply(early)).status, "ok");
  await waitFor(() => seen.includes("sent before joined"), { what: "the broadcast" });
});

test("phx_error makes the channel rejoin by itself with a new join_ref", async () => {
  const socket = connect();
  const channel = socket.channel("chat:crash");
  const errors = [];
  channel.onError((reason) => errors.push(reason));
  await reply(channel.join());
  const firstJoinRef = channel.joinRef();
  fake.crash("chat:crash");
  await waitFor(() => errors.length === 1, { what: "phx_error" });
  await waitFor(() => channel.state === "joined" && channel.joinRef() !== firstJoinRef, { what: "the rejoin" });
  assert.equal((await reply(channel.push("new_msg", { text: "after crash" }))).status, "ok");
});

test("a refused join reports its reason and keeps retrying with backoff", async () => {
  const socket = connect();
  const channel = socket.channel("refuse:x");
  const reasons = [];
  channel.join().receive("error", ({ reason }) => reasons.push(reason));
  await waitFor(() => reasons.length >= 2, { what: "two refusals" });
  assert.equal(reasons[0], "unknown room kind");
  assert.equal(channel.state, "errored");
  channel.leave();
  const count = fake.state.joinsByTopic.get("refuse:x");
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(fake.state.joinsByTopic.get("refuse:x"), count, "no retries after leave()");
});

test("a push without a reply times out", async () => {
  const socket = connect();
  const channel = socket.channel("chat:t");
  await reply(channel.join());
  assert.equal((await reply(channel.push("silent", {}, 100))).status, "timeout");
});

test("frames of an outdated join are ignored; phx_close of the current join closes", async () => {
  const socket = connect();
  const channel = socket.channel("chat:close");
  const closes = [];
  const infos = [];
  channel.onClose(() => closes.push(1));
  channel.on("room_info", (info) => infos.push(info));
  await reply(channel.join());
  await waitFor(() => infos.length === 1, { what: "room_info" });
  fake.sendRaw(["999999", "999999", "chat:close", "phx_close", {}]);
  fake.sendRaw(["999999", null, "chat:close", "room_info", { generation: 99 }]);
  fake.sendRaw([null, null, "chat:close", "room_info", { generation: 2 }]); // broadcasts carry no join_ref
  await waitFor(() => infos.length === 2, { what: "the broadcast" });
  assert.equal(infos[1].generation, 2);
  assert.equal(closes.length, 0);
  assert.equal(channel.state, "joined");
  fake.sendRaw([channel.joinRef(), channel.joinRef(), "chat:close", "phx_close", {}]);
  await waitFor(() => closes.length === 1, { what: "phx_close" });
  assert.equal(channel.state, "closed");
  assert.ok(!socket.channels.includes(channel));
});

test("a missed heartbeat reply closes the connection, reconnects and rejoins", async () => {
  const socket = connect({ heartbeatIntervalMs: 100 });
  const statuses = [];
  socket.onStatus((s) => statuses.push(s));
  const channel = socket.channel("chat:hb");
  await reply(channel.join());
  const joinRef = channel.joinRef();
  fake.state.dropHeartbeats = true;
  try {
    await waitFor(() => statuses.includes("reconnecting"), { what: "the heartbeat timeout" });
  } finally {
    fake.state.dropHeartbeats = false;
  }
  await waitFor(() => socket.status === "open" && channel.state === "joined" && channel.joinRef() !== joinRef,
    { what: "reconnect and rejoin" });
});

test("a dropped connection reconnects with backoff and the channel rejoins", async () => {
  const socket = connect();
  const channel = socket.channel("chat:drop");
  await reply(channel.join());
  fake.dropAllWebSockets();
  await waitFor(() => socket.status === "reconnecting" || channel.state !== "joined", { what: "the drop" });
  await waitFor(() => socket.status === "open" && channel.state === "joined", { what: "the rejoin" });
  assert.equal((await reply(channel.push("new_msg", { text: "back" }))).status, "ok");
});

test("disconnect() stays closed; connect() brings the channel back", async () => {
  const socket = connect();
  const channel = socket.channel("chat:dc");
  await reply(channel.join());
  socket.disconnect();
  assert.equal(socket.status, "closed");
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(socket.status, "closed");
  socket.connect();
  await waitFor(() => channel.state === "joined", { what: "the rejoin" });
});

test("long-poll transport: joins, pushes and receives broadcasts", async () => {
  const socket = connect({ transport: "longpoll" });
  const ws = connect();
  const lpChannel = socket.channel("chat:lp");
  const wsChannel = ws.channel("chat:lp");
  const seen = [];
  lpChannel.on("new_msg", (msg) => seen.push(msg.text));
  await reply(lpChannel.join());
  await reply(wsChannel.join());
  assert.equal((await reply(lpChannel.push("new_msg", { text: "from long-poll" }))).status, "ok");
  assert.equal((await reply(wsChannel.push("new_msg", { text: "from websocket" }))).status, "ok");
  await waitFor(() => seen.includes("from long-poll") && seen.includes("from websocket"), { what: "both broadcasts" });
});

test("falls back to long-poll when the WebSocket cannot connect", async () => {
  const lpOnly = await startFakePhoenix({ webSocket: false });
  try {
    const socket = connect({ longPollFallbackMs: 2000 }, lpOnly.endpoint);
    const channel = socket.channel("chat:fallback");
    assert.equal((await reply(channel.join())).status, "ok");
    assert.equal(socket.transportName, "longpoll");
    socket.disconnect();
  } finally {
    await lpOnly.stop();
  }
});

test("after falling back to long-poll, moves back to the WebSocket once one opens", async () => {
  // While `blocked`, every WebSocket goes to a closed port: refused at once.
  let blocked = true;
  class GatedWebSocket extends WebSocket {
    constructor(url, ...rest) { super(blocked ? "ws://127.0.0.1:1/socket/websocket" : url, ...rest); }
  }
  const socket = connect({ WebSocket: GatedWebSocket, longPollFallbackMs: 500, webSocketProbeMs: 100 });
  const channel = socket.channel("chat:probe");
  assert.equal((await reply(channel.join())).status, "ok");
  assert.equal(socket.transportName, "longpoll");
  // Probes fail while the WebSocket is unreachable: long-poll keeps serving.
  await sleep(600);
  assert.equal(socket.transportName, "longpoll");
  assert.equal((await reply(channel.push("new_msg", { text: "over long-poll" }))).status, "ok");
  blocked = false;
  await waitFor(() => socket.transportName === "websocket" && socket.isConnected() && channel.state === "joined",
    { timeoutMs: 8000, what: "the move back to the WebSocket" });
  assert.equal((await reply(channel.push("new_msg", { text: "over the websocket" }))).status, "ok");
  socket.disconnect();
});

test("Presence helpers match phoenix.js on joins, leaves and meta updates", () => {
  const state = {
    alice: { metas: [{ phx_ref: "a1", online_at: 1 }, { phx_ref: "a2", online_at: 2 }] },
    bob: { metas: [{ phx_ref: "b1", online_at: 3 }] },
  };
  const diffs = [
    { joins: { carol: { metas: [{ phx_ref: "c1" }] } }, leaves: {} },
    { joins: { alice: { metas: [{ phx_ref: "a3", phx_ref_prev: "a1", typing: true }] } },
      leaves: { alice: { metas: [{ phx_ref: "a1" }] } } },
    { joins: {}, leaves: { bob: { metas: [{ phx_ref: "b1" }] } } },
    JSON.parse('{"joins": {"__proto__": {"metas": [{"phx_ref": "p1"}]}}, "leaves": {}}'),
  ];
  const run = (P) => {
    const events = [];
    let s = P.syncState({}, JSON.parse(JSON.stringify(state)), (k) => events.push(`join ${k}`), (k) => events.push(`leave ${k}`));
    for (const diff of diffs) s = P.syncDiff(s, JSON.parse(JSON.stringify(diff)), (k) => events.push(`join ${k}`), (k) => events.push(`leave ${k}`));
    s = P.syncState(s, { alice: s.alice }, (k) => events.push(`join ${k}`), (k) => events.push(`leave ${k}`));
    return { events, list: JSON.parse(JSON.stringify(P.list(s, (key, p) => ({ key, refs: p.metas.map((m) => m.phx_ref) })))) };
  };
  const ours = run(Presence);
  assert.deepEqual(ours, run(OfficialPresence));
  assert.ok(ours.events.includes("join __proto__"), "a user may be called __proto__");
  assert.deepEqual(ours.list, [{ key: "alice", refs: ["a2", "a3"] }]);
});
