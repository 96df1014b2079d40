// Binary payloads with the official phoenix client (1.8.16): an ArrayBuffer
// push reaches the script as a Uint8Array, and its binary reply (kind 1),
// broadcast (kind 2) and push (kind 0) come back to phoenix.js as
// ArrayBuffers — phoenix.js's own serializer decodes roomhost's frames.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { copyRoomsDir } from "./support/roomhost.js";
import { join, replyOf, roomhostWithClients } from "./support/phoenix-client.js";
import { waitFor } from "./support/wait.js";

const roomsDir = copyRoomsDir();
fs.writeFileSync(path.join(roomsDir, "bytes.js"), `
export function onMessage(conn, event, payload) {
  if (!(payload instanceof Uint8Array)) return { json: true };
  const reversed = payload.slice().reverse();
  room.broadcast("reversed", reversed, { except: conn.id });
  room.push(conn.id, "mine", payload);
  return reversed;
}
`);
const { open } = roomhostWithClients({ roomsDir });
// Registered after the server's hooks, so it runs once the server stopped.
after(() => fs.rmSync(roomsDir, { recursive: true, force: true }));

const bytesOf = (buffer) => Array.from(new Uint8Array(buffer));

test("ArrayBuffer pushes get binary replies, pushes and broadcasts", async () => {
  const alice = await open("alice");
  const bob = await open("bob");
  const { channel: a } = await join(alice, "bytes:js");
  const { channel: b } = await join(bob, "bytes:js");
  const seen = { reversed: [], mine: [] };
  b.on("reversed", (data) => seen.reversed.push(data));
  a.on("mine", (data) => seen.mine.push(data));

  const sent = new Uint8Array([0, 1, 2, 250, 255]);
  const reply = await replyOf(a.push("flip", sent.buffer));
  assert.equal(reply.status, "ok");
  assert.ok(reply.response instanceof ArrayBuffer, "the reply is an ArrayBuffer");
  assert.deepEqual(bytesOf(reply.response), [255, 250, 2, 1, 0]);
  await waitFor(() => seen.reversed.length === 1 && seen.mine.length === 1, { what: "the broadcast and the push" });
  assert.ok(seen.reversed[0] instanceof ArrayBuffer);
  assert.deepEqual(bytesOf(seen.reversed[0]), [255, 250, 2, 1, 0]);
  assert.deepEqual(bytesOf(seen.mine[0]), [0, 1, 2, 250, 255]);
  // A JSON push to the same room still gets an object.
  const json = await replyOf(a.push("flip", { x: 1 }));
  assert.deepEqual(json, { status: "ok", response: { json: true } });
});
