// Cluster mode with the official phoenix client: clients on two nodes chat
// in a room a third node runs; after that node's kill -9, phoenix.js rejoins
// by itself (phx_error → rejoin) and the chat goes on with its history.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster } from "./support/cluster.js";
import { closeAll, connect, join, replyOf } from "./support/phoenix-client.js";
import { waitFor } from "./support/wait.js";

const TOPIC = "chat:js-cluster";
let cluster;
const sockets = [];

before(async () => { cluster = await startCluster({ nodes: 3, lease: 2 }); });
after(async () => {
  closeAll(sockets);
  if (cluster) await cluster.stop();
});

async function member(node, user) {
  const socket = await connect(node, user);
  sockets.push(socket);
  const joined = await join(socket, TOPIC);
  const said = [];
  joined.channel.on("new_msg", (msg) => said.push(`${msg.user}: ${msg.text}`));
  let errors = 0;
  joined.channel.onError(() => { errors += 1; });
  return { ...joined, said, errors: () => errors };
}

test("clients on two nodes chat; after the owner's kill -9 both rejoin and continue", async () => {
  const [n1, n2, n3] = cluster.nodes;
  // n1 runs the room: its first join was there.
  const opener = await connect(n1, "opener");
  await join(opener, TOPIC);
  const bob = await member(n2, "bob");
  const carol = await member(n3, "carol");
  assert.equal((await replyOf(bob.channel.push("new_msg", { text: "hi carol" }))).status, "ok");
  assert.equal((await replyOf(carol.channel.push("new_msg", { text: "hi bob" }))).status, "ok");
  const before = ["bob: hi carol", "carol: hi bob"];
  for (const { said } of [bob, carol]) {
    await waitFor(() => said.length === 2, { what: "both messages on both nodes" });
    assert.deepEqual(said, before);
  }

  opener.disconnect();
  await n1.kill();
  // Both channels error (bob's push finds no owner; carol's node notices)
  // and phoenix.js rejoins them on their own nodes once the room runs again.
  const sent = bob.channel.push("new_msg", { text: "still there?" });
  for (const { errors } of [bob, carol]) {
    await waitFor(() => errors() > 0, { what: "phx_error after the owner's kill", timeoutMs: 15000 });
  }
  await waitFor(() => bob.channel.state === "joined" && carol.channel.state === "joined",
    { what: "both channels joined again", timeoutMs: 20000 });
  // Sent to a dead owner: its answer (if any) carries the old join's ref,
  // which phoenix.js ignores, so it times out, as a push in flight does
  // when a room crashes on one node.
  const reply = await replyOf(sent, "the push sent during the failover");
  assert.ok(["ok", "error", "timeout"].includes(reply.status), JSON.stringify(reply));
  assert.equal((await replyOf(carol.channel.push("new_msg", { text: "back" }))).status, "ok");
  for (const { said } of [bob, carol]) {
    await waitFor(() => said.includes("carol: back"), { what: "the chat goes on" });
  }
  // The room kept its history across the failover.
  const late = await connect(n2, "dave");
  sockets.push(late);
  const { response } = await join(late, TOPIC);
  const texts = response.messages.map((m) => `${m.user}: ${m.text}`);
  assert.deepEqual(texts.slice(0, 2), before);
  assert.ok(texts.includes("carol: back"), JSON.stringify(texts));
});
