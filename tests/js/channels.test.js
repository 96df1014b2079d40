// roomhost speaks Phoenix Channels: the official `phoenix` npm client joins,
// pushes, receives broadcasts and survives a room kill against the real server.

import { test } from "node:test";
import assert from "node:assert/strict";
import { api, needs } from "./support/roomhost.js";
import { join, replyOf, roomhostWithClients } from "./support/phoenix-client.js";
import { waitFor, within } from "./support/wait.js";

const { server, open } = roomhostWithClients();

test("the join reply carries the room's messages", async () => {
  const alice = await open("alice");
  const { channel } = await join(alice, "chat:js-history");
  const sent = await replyOf(channel.push("new_msg", { text: "kept for later" }));
  assert.equal(sent.status, "ok");

  const bob = await open("bob");
  const { response } = await join(bob, "chat:js-history");
  assert.ok(Array.isArray(response.messages), "join reply has a messages array");
  const msg = response.messages.find((m) => m.id === sent.response.id);
  assert.ok(msg, "history holds the message pushed before the join");
  assert.equal(msg.user, "alice");
  assert.equal(msg.text, "kept for later");
  assert.equal(typeof msg.at, "number");
  assert.ok(Math.abs(msg.at - Date.now()) < 60000, "at is ms since the epoch");
});

test("push new_msg is answered ok with the message id", async () => {
  const socket = await open("carol");
  const { channel } = await join(socket, "chat:js-push");
  const reply = await replyOf(channel.push("new_msg", { text: "hello" }));
  assert.equal(reply.status, "ok");
  assert.ok(reply.response.id !== undefined && reply.response.id !== null, "reply carries an id");
});

test("a second client receives the broadcast", async () => {
  const alice = await open("alice");
  const bob = await open("bob");
  const { channel: aliceChannel } = await join(alice, "chat:js-broadcast");
  const { channel: bobChannel } = await join(bob, "chat:js-broadcast");
  const received = [];
  bobChannel.on("new_msg", (msg) => received.push(msg));
  const reply = await replyOf(aliceChannel.push("new_msg", { text: "  hi bob  " }));
  assert.equal(reply.status, "ok");
  const msg = await waitFor(() => received.find((m) => m.id === reply.response.id), { what: "the broadcast", timeoutMs: 5000 });
  assert.equal(msg.user, "alice");
  assert.equal(msg.text, "hi bob", "text is trimmed");
  assert.equal(typeof msg.at, "number");
});

test("a blank message is refused with a reason", async () => {
  const socket = await open("dave");
  const { channel } = await join(socket, "chat:js-blank");
  const reply = await replyOf(channel.push("new_msg", { text: "   " }));
  assert.equal(reply.status, "error");
  assert.equal(typeof reply.response.reason, "string");
  assert.match(reply.response.reason, /blank/);
});

test("after a join the server pushes room_info, then presence_state", needs("presence"), async () => {
  const socket = await open("erin");
  const { events } = await join(socket, "chat:js-info", { record: ["room_info", "presence_state"] });
  await waitFor(() => events.length >= 2, { what: "room_info and presence_state" });
  assert.deepEqual(events.slice(0, 2).map((e) => e.event), ["room_info", "presence_state"]);
  const info = events[0].payload;
  assert.equal(info.topic, "chat:js-info");
  assert.equal(info.kind, "chat");
  assert.equal(typeof info.generation, "number");
  assert.ok("version" in info, "room_info has a version");
});

test("the heartbeat on topic phoenix is answered", async () => {
  const socket = await open("frank");
  const rtt = await within(new Promise((resolve) => socket.ping(resolve)), 5000, "the heartbeat reply");
  assert.equal(typeof rtt, "number");
});

test("unknown room kinds and invalid topics are refused with a reason", async () => {
  const socket = await open("gina");
  await assert.rejects(join(socket, "nosuchkind:x"), /unknown room kind/);
  await assert.rejects(join(socket, "chat:bad topic!"), /error/);
});

test("after a kill the channel gets phx_error, rejoins on its own and can push again", async () => {
  const socket = await open("hank");
  const { channel, events } = await join(socket, "chat:js-kill", { record: ["room_info"] });
  await waitFor(() => events.length >= 1, { what: "room_info" });
  const generationBefore = events[0].payload.generation;
  const errors = [];
  channel.onError((reason) => errors.push(reason));
  const joinRefBefore = channel.joinRef();

  const killed = await api(server, "POST", "/api/rooms/chat:js-kill/kill");
  assert.equal(killed.status, 200, `kill answered ${killed.status}: ${JSON.stringify(killed.body)}`);
  assert.equal(killed.body.topic, "chat:js-kill");
  assert.ok(killed.body.generation > generationBefore, "the new generation is higher");

  await waitFor(() => errors.length >= 1, { what: "phx_error", timeoutMs: 5000 });
  await waitFor(() => channel.state === "joined" && channel.joinRef() !== joinRefBefore, { what: "the automatic rejoin", timeoutMs: 15000 });
  await waitFor(() => events.length >= 2, { what: "room_info of the new join" });
  assert.equal(events.at(-1).payload.generation, killed.body.generation);
  const reply = await replyOf(channel.push("new_msg", { text: "still here" }));
  assert.equal(reply.status, "ok");
});

test("GET /api/rooms lists rooms and totals", async () => {
  const socket = await open("ivy");
  await join(socket, "chat:js-api");
  const { status, body } = await api(server, "GET", "/api/rooms");
  assert.equal(status, 200);
  const room = body.rooms.find((r) => r.topic === "chat:js-api");
  assert.ok(room, "the joined room is listed");
  for (const field of ["kind", "state", "generation", "restarts", "channels", "users", "events_in", "version"]) {
    assert.ok(field in room, `room has ${field}`);
  }
  assert.equal(room.state, "running");
  for (const field of ["rooms", "connections", "messages_per_sec"]) assert.ok(field in body.totals, `totals have ${field}`);
});
