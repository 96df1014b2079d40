// A chat with the official phoenix client, run as its own Node process so
// that NODE_EXTRA_CA_CERTS (read once, at start-up) makes it trust the test's
// self-signed certificate as an operator's client trusts a real one: no
// verification is turned off. Usage:
//   NODE_EXTRA_CA_CERTS=cert.pem node chat-client.js <endpoint> <websocket|longpoll> <topic>
// Alice and Bob join, Alice pushes, both get the broadcast; then Carol joins
// and gets it in the history. Prints one JSON line with what each saw.

import { LongPoll, Socket } from "phoenix";
import WebSocket from "ws";
import { within } from "../../js/support/wait.js";

const TIMEOUT_MS = 15000;
const [endpoint, transportName, topic] = process.argv.slice(2);
const transport = { websocket: WebSocket, longpoll: LongPoll }[transportName];
if (!endpoint || !transport || !topic) {
  console.error("usage: chat-client.js <endpoint> <websocket|longpoll> <topic>");
  process.exit(2);
}

const sockets = [];

async function open(user) {
  const socket = new Socket(endpoint, { transport, params: { user }, reconnectAfterMs: () => 500 });
  const errors = [];
  socket.onError((e) => errors.push(String(e?.message || e?.type || e)));
  const opened = new Promise((resolve) => socket.onOpen(resolve));
  socket.connect();
  sockets.push(socket);
  await within(opened, TIMEOUT_MS, `${user}'s socket to open (errors: ${errors.join("; ")})`);
  return socket;
}

function reply(push, what) {
  return within(new Promise((resolve) => {
    push.receive("ok", (response) => resolve({ status: "ok", response }))
      .receive("error", (response) => resolve({ status: "error", response }))
      .receive("timeout", () => resolve({ status: "timeout" }));
  }), TIMEOUT_MS, what);
}

async function join(socket, user) {
  const channel = socket.channel(topic, {});
  const seen = [];
  channel.on("new_msg", (msg) => seen.push(msg));
  const joined = await reply(channel.join(), `${user}'s join`);
  if (joined.status !== "ok") throw new Error(`${user}'s join: ${JSON.stringify(joined)}`);
  return { channel, seen, history: joined.response.messages };
}

const firstOf = (seen, what) => within(new Promise((resolve) => {
  const tick = () => (seen.length ? resolve(seen[0]) : setTimeout(tick, 20));
  tick();
}), TIMEOUT_MS, what);

try {
  const alice = await open("alice");
  const bob = await open("bob");
  const a = await join(alice, "alice");
  const b = await join(bob, "bob");
  const text = `hello over ${transportName}`;
  const pushed = await reply(a.channel.push("new_msg", { text }), "the push's reply");
  const atAlice = await firstOf(a.seen, "the broadcast at alice");
  const atBob = await firstOf(b.seen, "the broadcast at bob");
  const carol = await open("carol");
  const c = await join(carol, "carol");
  console.log(JSON.stringify({
    transport: alice.transportName(alice.transport),
    pushed,
    atAlice,
    atBob,
    carolHistory: c.history,
  }));
  for (const socket of sockets) socket.disconnect();
  process.exit(0);
} catch (error) {
  console.error(error?.stack || String(error));
  process.exit(1);
}
