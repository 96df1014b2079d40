// Tokens and the Origin check in a real browser (headless chromium): the
// Phoenix auth-token subprotocol opens a WebSocket only because the server
// answers `phoenix` (browsers fail the handshake otherwise); the chat page
// with ?token= chats as the token's user; a page of another origin cannot
// open a socket.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { startRoomhost, roomhostBin } from "../js/support/roomhost.js";
import { launchBrowser, userContext, openChat, send, waitForMessageCount, watchProblems } from "./support/browser.js";

const SECRET = "e2e secret";
let server;
let other;
let browser;

function mint(user) {
  const env = { ...process.env, ROOMHOST_SECRET: SECRET };
  delete env.ROOMHOST_SECRET_FILE;
  return execFileSync(roomhostBin(), ["token", "--user", user, "--ttl", "10m"], { env, encoding: "utf8" }).trim();
}

before(async () => {
  server = await startRoomhost({ env: { ROOMHOST_SECRET: SECRET } });
  // A second server: a page of another origin (another port).
  other = await startRoomhost();
  browser = await launchBrowser();
});
after(async () => {
  if (browser) await browser.close();
  if (other) await other.stop();
  if (server) await server.stop();
});

/** Opens a WebSocket from `page` to `url`; resolves to {opened, protocol} or {closed}. */
function openSocket(page, url, protocols) {
  return page.evaluate(([u, p]) => new Promise((resolve) => {
    const ws = p ? new WebSocket(u, p) : new WebSocket(u);
    const timer = setTimeout(() => resolve({ timeout: true }), 10000);
    ws.onopen = () => { clearTimeout(timer); resolve({ opened: true, protocol: ws.protocol }); ws.close(); };
    ws.onclose = () => { clearTimeout(timer); resolve({ closed: true }); };
  }), [url, protocols]);
}

test("the auth-token subprotocol opens a browser WebSocket; a missing token does not", async () => {
  const context = await userContext(browser, "sub");
  const page = watchProblems(await context.newPage());
  await page.goto(`${server.url}/healthz`);
  const ws = server.url.replace("http://", "ws://") + "/socket/websocket?vsn=2.0.0";
  // What phoenix.js sends for {authToken}: btoa without padding.
  const encoded = Buffer.from(mint("alice")).toString("base64").replace(/=/g, "");
  const ok = await openSocket(page, ws, ["phoenix", `base64url.bearer.phx.${encoded}`]);
  assert.deepEqual(ok, { opened: true, protocol: "phoenix" });
  const refused = await openSocket(page, ws, null);
  assert.deepEqual(refused, { closed: true });
  await context.close();
});

test("the chat page with ?token= chats as the token's user", async () => {
  const page = await openChat(await userContext(browser, "mallory"), server, "chat:e2e-auth", `&token=${mint("alice")}`);
  await send(page, "signed in");
  await waitForMessageCount(page, 1);
  assert.deepEqual(await page.locator("#messages .msg-user").allTextContents(), ["alice"]);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test("a page of another origin cannot open a socket", async () => {
  const context = await userContext(browser, "cross");
  const page = watchProblems(await context.newPage());
  // Same-origin on `other` works (no token needed there)…
  await page.goto(`${other.url}/healthz`);
  const own = other.url.replace("http://", "ws://") + "/socket/websocket?vsn=2.0.0&user=x";
  assert.equal((await openSocket(page, own, null)).opened, true);
  // …but `other`'s page may not reach `server`, even with a valid token.
  const cross = server.url.replace("http://", "ws://") + `/socket/websocket?vsn=2.0.0&token=${mint("alice")}`;
  assert.deepEqual(await openSocket(page, cross, null), { closed: true });
  const post = await page.evaluate(async (url) => {
    const resp = await fetch(url, { method: "POST", mode: "no-cors", body: new URLSearchParams({ text: "csrf" }) });
    return resp.type;
  }, `${server.url}/api/rooms/chat:e2e-auth-csrf/messages?token=${mint("alice")}`);
  assert.equal(post, "opaque");
  await context.close();
  const { rooms } = await (await fetch(`${server.url}/api/rooms`)).json();
  assert.ok(!rooms.some((r) => r.topic === "chat:e2e-auth-csrf"), "the cross-site post never reached a room");
});
