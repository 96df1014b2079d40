// Collaborative editing through rooms-js/yjs.js with the unmodified
// `y-phoenix-channel` provider (0.1.1) and `yjs` (13.6.33) over the official
// phoenix client: every Yjs update travels as a V2 binary push. Concurrent
// edits converge, a late joiner gets the document, and so does a joiner
// after the server process was killed and started again on its data dir.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as Y from "yjs";
import { PhoenixChannelProvider } from "y-phoenix-channel";
import { api, startRoomhost } from "./support/roomhost.js";
import { connect, closeAll } from "./support/phoenix-client.js";
import { waitFor } from "./support/wait.js";

const TOPIC = "yjs:js-doc";
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "roomhost-yjs-"));
// Snapshots every few events, so a restart restores yjs.js's snapshot (its
// updates in base64) and replays the binary events journaled after it.
const start = () => startRoomhost({ dataDir, args: ["--snapshot-events", "7"] });
let server = await start();
const sockets = [];
const editors = [];

after(async () => {
  for (const e of editors) close(e);
  closeAll(sockets);
  await server.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

/** A Y.Doc editing TOPIC through its own socket; resolves once synced. */
async function editor(user) {
  const socket = await connect(server, user);
  sockets.push(socket);
  const doc = new Y.Doc();
  // disableBc: the editors share one process, and BroadcastChannel would
  // let them sync without the server.
  const provider = new PhoenixChannelProvider(socket, TOPIC, doc, { disableBc: true });
  const e = { doc, text: doc.getText("t"), provider, socket, closed: false };
  editors.push(e);
  await waitFor(() => provider.synced, { what: `${user} to sync`, timeoutMs: 10000 });
  return e;
}

// The doc's destroy also stops its awareness timer, which would keep the
// process alive.
function close(e) {
  if (e.closed) return;
  e.closed = true;
  e.provider.destroy();
  e.doc.destroy();
  e.socket.disconnect();
}

const same = (a, b) => a.text.toString() === b.text.toString();

/** The updates yjs.js keeps (its snapshot, from the admin API). */
async function keptUpdates() {
  const { status, body } = await api(server, "GET", `/api/rooms/${TOPIC}/state`);
  assert.equal(status, 200, JSON.stringify(body));
  return body.state.updates.length;
}

test("two documents edited concurrently converge, and a late joiner matches", async () => {
  const a = await editor("alice");
  const b = await editor("bob");
  // Interleaved edits on both sides before either sees the other's.
  for (let i = 0; i < 20; i++) {
    a.text.insert(0, `a${i} `);
    b.text.insert(b.text.length, ` b${i}`);
    if (i % 5 === 4) b.doc.getMap("m").set(`k${i}`, i);
  }
  // b's last edit is its map entry k19: once a has it, a has everything.
  await waitFor(() => same(a, b) && b.text.toString().includes("a19") && a.doc.getMap("m").get("k19") === 19,
    { what: "the two documents to converge", timeoutMs: 10000 });
  for (let i = 0; i < 20; i++) {
    assert.ok(a.text.toString().includes(`a${i} `), `a${i} kept`);
    assert.ok(a.text.toString().includes(` b${i}`), `b${i} kept`);
  }
  assert.deepEqual(a.doc.getMap("m").toJSON(), { k4: 4, k9: 9, k14: 14, k19: 19 });

  // Every edit is one kept update (20 + 20 + 4 at least)...
  const before = await keptUpdates();
  assert.ok(before >= 44, `${before} updates kept before the late join`);

  const late = await editor("carol");
  await waitFor(() => same(late, a), { what: "the late joiner to match", timeoutMs: 10000 });
  // ...until a joiner's whole document replaces them (compaction).
  await waitFor(async () => (await keptUpdates()) <= 2, { what: "the log to be compacted", timeoutMs: 10000 });
  assert.deepEqual(late.doc.getMap("m").toJSON(), a.doc.getMap("m").toJSON());
  // The late joiner edits too; everyone sees it.
  late.text.insert(0, "late ");
  await waitFor(() => same(a, late) && same(b, late), { what: "the late edit to reach everyone", timeoutMs: 10000 });
  assert.ok(a.text.toString().startsWith("late "));
  for (const e of [a, b, late]) close(e);
});

test("a joiner after the server was killed and restarted gets the document", async () => {
  const a = await editor("dave");
  a.text.insert(a.text.length, " before the kill");
  const expected = a.text.toString();
  assert.ok(expected.includes("late "), "the document of the first test is there");
  // Wait until the room has journaled the edit: a second editor sees it.
  const witness = await editor("erin");
  await waitFor(() => same(witness, a), { what: "the edit to be relayed", timeoutMs: 10000 });
  close(a);
  close(witness);

  await server.kill();
  const files = fs.readdirSync(dataDir, { recursive: true }).map(String);
  assert.ok(files.some((f) => f.endsWith(".snap")), `a snapshot was taken: ${files}`);
  server = await start();
  const after = await editor("frank");
  await waitFor(() => after.text.toString() === expected, {
    what: `the restarted room to hold ${JSON.stringify(expected)} (has ${JSON.stringify(after.text.toString())})`,
    timeoutMs: 10000,
  });
  assert.deepEqual(after.doc.getMap("m").toJSON(), { k4: 4, k9: 9, k14: 14, k19: 19 });
  close(after);
});
