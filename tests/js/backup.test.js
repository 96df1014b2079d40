// The backup recipes of docs/deploy.md, with the real binary and the official
// client: a cold backup (stop, tar, start) and a hot one (freeze the process
// with SIGSTOP, tar, SIGCONT), each restored into a new data dir that a
// second server starts on. Every acknowledged message before the backup is
// in the restored room; the frozen server carries on with its clients still
// connected.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort, startRoomhost } from "./support/roomhost.js";
import { closeAll, connect, join, replyOf } from "./support/phoenix-client.js";

const tempDir = (name) => fs.mkdtempSync(path.join(os.tmpdir(), `roomhost-${name}-`));

/** `tar -C dir -czf archive .`, as the guide writes it. */
const backUp = (dir, archive) => execFileSync("tar", ["-C", dir, "-czf", archive, "."], { timeout: 60000 });
const restore = (archive, dir) => execFileSync("tar", ["-C", dir, "-xzf", archive], { timeout: 60000 });

async function say(channel, texts) {
  for (const text of texts) {
    assert.equal((await replyOf(channel.push("new_msg", { text }))).status, "ok");
  }
}

/** The history a new client gets when it joins `topic` on a server started on `dataDir`. */
async function historyOn(dataDir, topic) {
  const server = await startRoomhost({ dataDir });
  const socket = await connect(server, "auditor");
  try {
    const { response } = await join(socket, topic);
    return response.messages.map((m) => m.text);
  } finally {
    closeAll([socket]);
    await server.stop();
  }
}

test("cold backup: stop, tar, start; the restored copy has every message", async () => {
  const dataDir = tempDir("cold");
  const restored = tempDir("cold-restored");
  const archive = path.join(tempDir("cold-archive"), "roomhost.tgz");
  const port = await freePort();
  let server = await startRoomhost({ port, dataDir });
  const socket = await connect(server, "ann");
  try {
    const { channel } = await join(socket, "chat:js-backup-cold");
    await say(channel, ["one", "two", "three"]);
    assert.deepEqual(await server.stop(), { code: 0, signal: null });
    backUp(dataDir, archive);
    server = await startRoomhost({ port, dataDir });
    restore(archive, restored);
    assert.deepEqual(await historyOn(restored, "chat:js-backup-cold"), ["one", "two", "three"]);
  } finally {
    closeAll([socket]);
    await server.stop();
    for (const dir of [dataDir, restored, path.dirname(archive)]) fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("hot backup: SIGSTOP, tar, SIGCONT; clients stay connected and the copy has what was acknowledged", async () => {
  const dataDir = tempDir("hot");
  const restored = tempDir("hot-restored");
  const archive = path.join(tempDir("hot-archive"), "roomhost.tgz");
  const server = await startRoomhost({ dataDir });
  const socket = await connect(server, "ben");
  const closes = [];
  socket.onClose(() => closes.push(Date.now()));
  try {
    const { channel } = await join(socket, "chat:js-backup-hot");
    await say(channel, ["one", "two", "three"]);
    const frozenAt = performance.now();
    process.kill(server.pid, "SIGSTOP");
    try {
      backUp(dataDir, archive);
    } finally {
      process.kill(server.pid, "SIGCONT");
    }
    const frozenMs = performance.now() - frozenAt;
    // The server carries on where it was, on the same connection.
    await say(channel, ["four"]);
    assert.deepEqual(closes, [], "the socket was not closed");
    restore(archive, restored);
    // The copy is what a kill -9 at the freeze would have left: every
    // acknowledged message, and nothing after.
    assert.deepEqual(await historyOn(restored, "chat:js-backup-hot"), ["one", "two", "three"]);
    console.log(`# hot backup: server frozen ${frozenMs.toFixed(0)} ms for the tar`);
  } finally {
    closeAll([socket]);
    await server.stop();
    for (const dir of [dataDir, restored, path.dirname(archive)]) fs.rmSync(dir, { recursive: true, force: true });
  }
});
