// Upgrading the binary without losing state, as docs/deploy.md describes it:
// SIGTERM under connected clients drains (rooms snapshot, every connection is
// closed with 1001) and exits 0; a new process on the same port and data dir
// takes over; the official phoenix clients — WebSocket and long-poll — come
// back and rejoin by themselves, and the history is intact.

import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { LongPoll } from "phoenix";
import { freePort, startRoomhost } from "./support/roomhost.js";
import { closeAll, connect, replyOf } from "./support/phoenix-client.js";
import { waitFor } from "./support/wait.js";

const TOPIC = "chat:js-upgrade";

/** Joins TOPIC and counts every successful join (the first and each rejoin). */
function joinCounting(socket) {
  const channel = socket.channel(TOPIC, {});
  const joins = [];
  const seen = [];
  const closed = [];
  channel.on("new_msg", (msg) => seen.push(msg));
  channel.onClose(() => closed.push(Date.now()));
  channel.join().receive("ok", (response) => joins.push(response));
  return { channel, joins, seen, closed };
}

test("SIGTERM drains and exits 0; the next process on the same data takes the clients back", async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "roomhost-upgrade-"));
  const port = await freePort();
  const sockets = [];
  let server = await startRoomhost({ port, dataDir });
  try {
    const ws = await connect(server, "wes");
    const lp = await connect(server, "polly", { transport: LongPoll });
    sockets.push(ws, lp);
    const closes = [];
    ws.onClose((event) => closes.push(event.code));
    const a = joinCounting(ws);
    const b = joinCounting(lp);
    await waitFor(() => a.joins.length === 1 && b.joins.length === 1, { what: "both joins", timeoutMs: 10000 });
    for (const text of ["one", "two", "three"]) {
      assert.equal((await replyOf(a.channel.push("new_msg", { text }))).status, "ok");
    }
    await waitFor(() => b.seen.length === 3, { what: "the messages at the long-poll client", timeoutMs: 15000 });

    const stopping = performance.now();
    const exit = await server.stop();
    const drainMs = performance.now() - stopping;
    assert.deepEqual(exit, { code: 0, signal: null }, server.output());
    assert.match(server.output(), /shut down: rooms stopped, connections closed/);
    await waitFor(() => closes.length > 0, { what: "the WebSocket's close", timeoutMs: 5000 });
    assert.equal(closes[0], 1001, "server shutting down");

    const restarting = performance.now();
    server = await startRoomhost({ port, dataDir });
    // Both come back on their own: the socket reconnects, the channel rejoins.
    await waitFor(() => a.joins.length >= 2 && b.joins.length >= 2, { what: "both rejoins", timeoutMs: 30000 });
    const backMs = performance.now() - restarting;
    assert.deepEqual(a.closed, [], "the channel was not closed for good");
    const history = a.joins.at(-1).messages.map((m) => [m.user, m.text]);
    assert.deepEqual(history, [["wes", "one"], ["wes", "two"], ["wes", "three"]]);
    assert.deepEqual(b.joins.at(-1).messages.map((m) => m.text), ["one", "two", "three"]);

    // The room goes on where it was: the next id follows the old ones.
    const after = await replyOf(b.channel.push("new_msg", { text: "four" }));
    assert.equal(after.status, "ok");
    assert.equal(after.response.id, a.seen[2].id + 1);
    await waitFor(() => a.seen.length === 4, { what: "the new message at the WebSocket client", timeoutMs: 15000 });
    console.log(`# upgrade: SIGTERM to exit ${drainMs.toFixed(0)} ms; restart to both clients rejoined ${backMs.toFixed(0)} ms`);
  } finally {
    closeAll(sockets);
    await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
