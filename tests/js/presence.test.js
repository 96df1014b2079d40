// Presence with the official phoenix client's Presence class against the real
// server: two users, one of them with two sockets (tabs), then a leave and a
// meta update (typing), which arrive as Phoenix-shaped presence_diff events.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Presence } from "phoenix";
import { needs } from "./support/roomhost.js";
import { connect, join, replyOf, roomhostWithClients } from "./support/phoenix-client.js";
import { waitFor } from "./support/wait.js";

const TOPIC = "chat:js-presence";
const { server, sockets } = roomhostWithClients();

/** Joins with a Presence attached before the join, as apps do. */
async function joinWithPresence(user) {
  const socket = await connect(server, user);
  sockets.push(socket);
  const channel = socket.channel(TOPIC, {});
  const presence = new Presence(channel);
  const reply = await replyOf(channel.join(), `join of ${user}`);
  assert.equal(reply.status, "ok");
  return { socket, channel, presence };
}

const summary = (presence) => Object.fromEntries(
  presence.list((user, { metas }) => [user, metas]).map(([user, metas]) => [user, metas]),
);
const metaCount = (presence) => presence.list((_, { metas }) => metas.length).reduce((a, b) => a + b, 0);

test("two users, one with two tabs: list() gives 2 keys and 3 metas; leaves and meta updates sync", needs("presence"), async () => {
  const alice1 = await joinWithPresence("alice");
  const alice2 = await joinWithPresence("alice");
  const bob = await joinWithPresence("bob");

  for (const { presence } of [alice1, alice2, bob]) {
    await waitFor(() => presence.list().length === 2 && metaCount(presence) === 3,
      { what: "2 users and 3 metas", timeoutMs: 5000 });
  }
  const state = summary(bob.presence);
  assert.deepEqual(Object.keys(state).sort(), ["alice", "bob"]);
  assert.equal(state.alice.length, 2);
  for (const meta of [...state.alice, ...state.bob]) {
    assert.equal(typeof meta.phx_ref, "string", "every meta has a phx_ref");
    assert.ok(meta.online_at !== undefined, "every meta has online_at");
  }

  // A meta update: bob types. It is a leave of the old meta plus a join of
  // the new one, so the count stays at one meta for bob.
  const refBefore = summary(alice1.presence).bob[0].phx_ref;
  bob.channel.push("presence_update", { typing: true });
  await waitFor(() => summary(alice1.presence).bob?.[0]?.typing === true, { what: "bob typing in alice's view" });
  assert.equal(summary(alice1.presence).bob.length, 1);
  assert.notEqual(summary(alice1.presence).bob[0].phx_ref, refBefore, "the updated meta has a new phx_ref");
  bob.channel.push("presence_update", { typing: false });
  await waitFor(() => summary(alice1.presence).bob?.[0]?.typing !== true, { what: "bob no longer typing" });

  // A leave: one of alice's tabs goes; alice stays with one meta.
  await replyOf(alice2.channel.leave(), "leave");
  for (const { presence } of [alice1, bob]) {
    await waitFor(() => presence.list().length === 2 && metaCount(presence) === 2,
      { what: "alice down to one tab", timeoutMs: 5000 });
  }

  // A whole user leaving by closing the socket.
  bob.socket.disconnect();
  await waitFor(() => alice1.presence.list().length === 1 && summary(alice1.presence).alice?.length === 1,
    { what: "bob gone", timeoutMs: 5000 });
});

test("the server clears typing after 5 s without a refresh", needs("presence"), async () => {
  const watcher = await joinWithPresence("walter");
  const typist = await joinWithPresence("tina");
  typist.channel.push("presence_update", { typing: true });
  await waitFor(() => summary(watcher.presence).tina?.[0]?.typing === true, { what: "tina typing" });
  const started = Date.now();
  await waitFor(() => summary(watcher.presence).tina?.[0]?.typing !== true, { what: "typing cleared by the server", timeoutMs: 9000 });
  assert.ok(Date.now() - started >= 3000, "not cleared too early");
});
