// Connection tokens with the official `phoenix` client: its `authToken`
// option (the `base64url.bearer.phx.<token>` WebSocket subprotocol, the
// X-Phoenix-AuthToken header on long-poll) and the `token` param, against
// the real server started with ROOMHOST_SECRET. Tokens come from
// `roomhost token`.

import { test } from "node:test";
import assert from "node:assert/strict";
import { LongPoll, Socket } from "phoenix";
import WebSocket from "ws";
import { mintToken } from "./support/roomhost.js";
import { join, replyOf, roomhostWithClients } from "./support/phoenix-client.js";
import { waitFor, within } from "./support/wait.js";

const SECRET = "js test secret";

const { server, sockets, open } = roomhostWithClients({ env: { ROOMHOST_SECRET: SECRET } });
const mint = (user, secret = SECRET) => mintToken(user, secret);

/** The user the server gives this socket: the `user` its chat message is broadcast with. */
async function whoAmI(socket, topic) {
  const { channel, events } = await join(socket, topic, { record: ["new_msg"] });
  const sent = await replyOf(channel.push("new_msg", { text: "who am I?" }));
  assert.equal(sent.status, "ok");
  const seen = await waitFor(() => events.find((e) => e.payload.id === sent.response.id), {
    what: "the broadcast of our message",
    timeoutMs: 10000,
  });
  return seen.payload.user;
}

test("authToken over WebSocket: the subprotocol is accepted and the token names the user", async () => {
  // `params.user` is ignored once tokens are required.
  const socket = await open("mallory", { authToken: mint("alice") });
  assert.equal(socket.transportName(socket.transport), "WebSocket");
  assert.equal(socket.conn.protocol, "phoenix", "the server answered the phoenix subprotocol");
  assert.equal(await whoAmI(socket, "chat:js-auth-ws"), "alice");
});

test("authToken over LongPoll: the X-Phoenix-AuthToken header", async () => {
  const socket = await open("mallory", { authToken: mint("bea"), transport: LongPoll });
  assert.equal(socket.transportName(socket.transport), "LongPoll");
  assert.equal(await whoAmI(socket, "chat:js-auth-lp"), "bea");
});

test("the token connect param works over both transports", async () => {
  const ws = await open("mallory", { params: { token: mint("cy") } });
  assert.equal(await whoAmI(ws, "chat:js-auth-param"), "cy");
  const lp = await open("mallory", { params: { token: mint("di") }, transport: LongPoll });
  assert.equal(await whoAmI(lp, "chat:js-auth-param"), "di");
});

/** Resolves to the first error a socket reports (it must never open). */
async function refusal(opts) {
  const socket = new Socket(server.endpoint, {
    transport: WebSocket,
    reconnectAfterMs: () => 60000,
    ...opts,
  });
  sockets.push(socket);
  let opened = false;
  socket.onOpen(() => { opened = true; });
  const failed = new Promise((resolve) => socket.onError((error) => resolve(error)));
  socket.connect();
  const error = await within(failed, 10000, "the refusal");
  socket.disconnect();
  assert.equal(opened, false, "a refused socket never opens");
  return error;
}

test("a missing, forged or malformed token never connects", async () => {
  await refusal({ params: { user: "alice" } });
  await refusal({ authToken: mint("alice", "another secret") });
  await refusal({ authToken: "not.a.token" });
  // LongPoll reports the 403 itself.
  const error = await refusal({ authToken: mint("alice", "wrong"), transport: LongPoll });
  assert.equal(error, 403);
});
