// docs/deploy.md's nginx recipe, run for real: Debian's nginx with the
// committed deploy/nginx/roomhost.conf (see support/nginx.js), TLS with a
// certificate made here, in front of the real roomhost started as the guide
// says (--trusted-proxy 127.0.0.1). The official phoenix client chats through
// it over wss:// (WebSocket) and https:// (long-poll); an SSE stream gets a
// posted message promptly; the same-origin check passes through the proxy and
// roomhost sees the forwarded client address. Needs nginx and openssl (.ci/run
// installs them); `npm run test:deploy` runs it.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import https from "node:https";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startRoomhost } from "../js/support/roomhost.js";
import { within } from "../js/support/wait.js";
import { startNginx } from "./support/nginx.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLIENT = path.join(HERE, "support", "chat-client.js");

let roomhost;
let nginx;

before(async () => {
  roomhost = await startRoomhost({ args: ["--trusted-proxy", "127.0.0.1"] });
  nginx = await startNginx({ upstreamPort: roomhost.port });
});

after(async () => {
  if (nginx) await nginx.stop();
  if (roomhost) await roomhost.stop();
});

/** A request through nginx over TLS, trusting only the test's certificate. */
function request(method, pathname, { headers = {}, body } = {}) {
  return within(new Promise((resolve, reject) => {
    const req = https.request({
      host: "127.0.0.1", port: nginx.httpsPort, method, path: pathname, headers, ca: nginx.ca,
    }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => { text += chunk; });
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    req.on("error", reject);
    req.end(body);
  }), 15000, `${method} ${pathname} through nginx`);
}

/** Runs support/chat-client.js with the test's certificate trusted. */
function chat(endpoint, transport, topic) {
  return within(new Promise((resolve, reject) => {
    execFile(process.execPath, [CLIENT, endpoint, transport, topic], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: nginx.caFile },
      timeout: 60000,
    }, (error, stdout, stderr) => {
      if (error) reject(new Error(`chat-client (${transport}) failed: ${error.message}\n${stderr}\nnginx: ${nginx.errorLog().slice(-2000)}`));
      else resolve(JSON.parse(stdout.trim().split("\n").pop()));
    });
  }), 70000, `the ${transport} chat`);
}

function assertChat(result, transport) {
  assert.equal(result.transport, transport);
  assert.equal(result.pushed.status, "ok", JSON.stringify(result.pushed));
  const text = `hello over ${transport === "WebSocket" ? "websocket" : "longpoll"}`;
  for (const msg of [result.atAlice, result.atBob]) {
    assert.deepEqual([msg.id, msg.user, msg.text], [result.pushed.response.id, "alice", text]);
  }
  assert.deepEqual(result.carolHistory.map((m) => [m.user, m.text]), [["alice", text]]);
}

test("plain HTTP is redirected to HTTPS", async () => {
  const res = await within(new Promise((resolve, reject) => {
    http.get({ host: "127.0.0.1", port: nginx.httpPort, path: "/?room=chat:x" }, resolve).on("error", reject);
  }), 10000, "the redirect");
  res.resume();
  assert.equal(res.statusCode, 301);
  assert.equal(res.headers.location, "https://127.0.0.1/?room=chat:x");
});

test("the chat UI, the health check and the dashboard are served over HTTPS", async () => {
  const page = await request("GET", "/");
  assert.equal(page.status, 200);
  assert.match(page.headers["content-type"], /text\/html/);
  const health = await request("GET", "/healthz");
  assert.equal(health.status, 200, health.text);
  // The dashboard, to this loopback client (no admin token is set here).
  const dashboard = await request("GET", "/admin");
  assert.equal(dashboard.status, 200, dashboard.text);
});

test("the official client chats over wss:// (WebSocket) through nginx", async () => {
  const result = await chat(`wss://127.0.0.1:${nginx.httpsPort}/socket`, "websocket", "chat:deploy-ws");
  assertChat(result, "WebSocket");
  // The handshake went through nginx and was upgraded there.
  assert.match(nginx.accessLog(), /"GET \/socket\/websocket\?[^"]*user=alice[^"]*" 101 /);
});

test("the official client chats over https:// long-poll through nginx", async () => {
  const result = await chat(`https://127.0.0.1:${nginx.httpsPort}/socket`, "longpoll", "chat:deploy-lp");
  assertChat(result, "LongPoll");
  const log = nginx.accessLog();
  assert.match(log, /"POST \/socket\/longpoll\?[^"]*" 200 /);
  assert.match(log, /"GET \/socket\/longpoll\?[^"]*user=carol[^"]*" 200 /);
});

test("an SSE stream through nginx gets a posted message promptly", async () => {
  const topic = "chat:deploy-sse";
  const events = [];
  let res;
  const stream = https.get({
    host: "127.0.0.1", port: nginx.httpsPort, path: `/api/rooms/${topic}/events`, ca: nginx.ca,
    headers: { Accept: "text/event-stream" },
  });
  try {
    res = await within(new Promise((resolve, reject) => {
      stream.on("response", resolve);
      stream.on("error", reject);
    }), 10000, "the SSE response");
    assert.equal(res.statusCode, 200);
    assert.match(res.headers["content-type"], /text\/event-stream/);
    let buffered = "";
    res.setEncoding("utf8");
    res.on("data", (chunk) => {
      buffered += chunk;
      const blocks = buffered.split("\n\n");
      buffered = blocks.pop();
      for (const block of blocks) {
        if (block.includes("event: new_msg")) events.push({ block, at: performance.now() });
      }
    });
    const sent = performance.now();
    const posted = await request("POST", `/api/rooms/${topic}/messages`, {
      headers: { "Content-Type": "application/json", Origin: nginx.origin },
      body: JSON.stringify({ event: "new_msg", payload: { text: "over sse" }, user: "curl" }),
    });
    assert.equal(posted.status, 200, posted.text);
    const arrived = await within(new Promise((resolve) => {
      const tick = () => (events.length ? resolve(events[0]) : setTimeout(tick, 5));
      tick();
    }), 10000, "the message on the SSE stream");
    assert.match(arrived.block, /"text":"over sse"/);
    const ms = arrived.at - sent;
    // A buffering proxy would hold it until its buffer fills or the 15 s
    // keep-alive comes; unbuffered it takes a round trip.
    assert.ok(ms < 2000, `the message took ${ms.toFixed(0)} ms through nginx`);
    console.log(`# SSE through nginx: post to event in ${ms.toFixed(1)} ms`);
  } finally {
    stream.destroy();
  }
});

test("the same-origin check passes through nginx; other origins are refused", async () => {
  const same = await request("GET", "/socket/longpoll?vsn=2.0.0&user=o", { headers: { Origin: nginx.origin } });
  assert.equal(same.status, 200, same.text);
  const evil = await request("GET", "/socket/longpoll?vsn=2.0.0&user=o", { headers: { Origin: "https://evil.example" } });
  assert.equal(evil.status, 403, evil.text);
  assert.match(evil.text, /not allowed/);
});

test("roomhost sees the client address nginx forwards", async () => {
  // This client is on loopback, so the admin API answers it...
  const local = await request("GET", "/api/rooms");
  assert.equal(local.status, 200, local.text);
  // ...and a client nginx names as 203.0.113.5 is not: roomhost trusts the
  // proxy (--trusted-proxy 127.0.0.1) and reads X-Forwarded-For.
  const remote = await request("GET", "/api/rooms", { headers: { "X-Forwarded-For": "203.0.113.5" } });
  assert.equal(remote.status, 403, remote.text);
  assert.match(remote.text, /loopback clients only/);
});
