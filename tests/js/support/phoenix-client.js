// The official `phoenix` npm client, wrapped in promises with timeouts so a
// missing reply fails a test instead of hanging it.

import { Socket } from "phoenix";
import WebSocket from "ws";
import { after } from "node:test";
import { roomhostForFile } from "./roomhost.js";
import { within } from "./wait.js";

const TIMEOUT_MS = 10000;

/** Opens an official phoenix Socket as `user`; resolves once connected. */
export async function connect(server, user, opts = {}) {
  const socket = new Socket(server.endpoint, {
    transport: WebSocket,
    params: { user },
    // Keep reconnects quick in tests; rejoin keeps phoenix.js's own backoff.
    reconnectAfterMs: () => 200,
    ...opts,
  });
  const opened = new Promise((resolve) => socket.onOpen(resolve));
  socket.connect();
  await within(opened, TIMEOUT_MS, `socket of ${user} to open`);
  return socket;
}

/** Resolves to `{status, response}` of a Push ("ok", "error" or "timeout"). */
export function replyOf(push, what = "a reply") {
  return within(new Promise((resolve) => {
    push.receive("ok", (response) => resolve({ status: "ok", response }))
      .receive("error", (response) => resolve({ status: "error", response }))
      .receive("timeout", () => resolve({ status: "timeout" }));
  }), TIMEOUT_MS + 2000, what);
}

/**
 * Joins `topic`; resolves to `{channel, response, events}` or throws with the
 * refusal. `record` names events to capture from before the join (room_info
 * and presence_state arrive right after the join reply).
 */
export async function join(socket, topic, { params = {}, record = [] } = {}) {
  const channel = socket.channel(topic, params);
  const events = recordEvents(channel, record);
  const reply = await replyOf(channel.join(), `join of ${topic}`);
  if (reply.status !== "ok") {
    channel.leave();
    throw new Error(`join of ${topic} answered ${reply.status}: ${JSON.stringify(reply.response)}`);
  }
  return { channel, response: reply.response, events };
}

/** Records every event (and its payload) a channel receives, in order. */
export function recordEvents(channel, events) {
  const seen = [];
  for (const event of events) channel.on(event, (payload) => seen.push({ event, payload }));
  return seen;
}

export function closeAll(sockets) {
  for (const socket of sockets) {
    try { socket.disconnect(); } catch { /* already gone */ }
  }
}

/**
 * The shared setup of a test file for the official client: its roomhost
 * (roomhostForFile, with `options`) and `open(user, opts)`, which connects
 * like `connect` and keeps the socket in `sockets`. Every socket in
 * `sockets` (a test may add its own) is disconnected after the file's
 * tests, before the server stops.
 */
export function roomhostWithClients(options) {
  const sockets = [];
  // Registered before the server's hooks, so it runs before the server stops.
  after(() => closeAll(sockets));
  const server = roomhostForFile(options);
  const open = async (user, opts) => {
    const socket = await connect(server, user, opts);
    sockets.push(socket);
    return socket;
  };
  return { server, sockets, open };
}
