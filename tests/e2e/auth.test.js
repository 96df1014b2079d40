// Tokens and the Origin check in a real browser (headless chromium): the
// Phoenix auth-token subprotocol opens a WebSocket only because the server
// answers `phoenix` (browsers fail the handshake otherwise); the chat page
// with ?token= chats as the token's user; a page of another origin cannot
// open a socket.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mintToken, roomhostForFile } from "../js/support/roomhost.js";
import { roomhostAndBrowserForFile, userContext, openChat, send, waitForMessageCount, watchProblems } from "./support/browser.js";

const SECRET = "e2e secret";
const e2e = roomhostAndBrowserForFile({ env: { ROOMHOST_SECRET: SECRET } });
// A second server: a page of another origin (another port).
const other = roomhostForFile();

const mint = (user) => mintToken(user, SECRET);

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
  const context = await userContext(e2e.browser, "sub");
  const page = watchProblems(await context.newPage());
  await page.goto(`${e2e.server.url}/healthz`);
  const ws = e2e.server.url.replace("http://", "ws://") + "/socket/websocket?vsn=2.0.0";
  // What phoenix.js sends for {authToken}: btoa without padding.
  const encoded = Buffer.from(mint("alice")).toString("base64").replace(/=/g, "");
  const ok = await openSocket(page, ws, ["phoenix", `base64url.bearer.phx.${encoded}`]);
  assert.deepEqual(ok, { opened: true, protocol: "phoenix" });
  const refused = await openSocket(page, ws, null);
  assert.deepEqual(refused, { closed: true });
  await context.close();
});

test("the chat page with ?token= chats as the token's user", async () => {
  const page = await openChat(await userContext(e2e.browser, "mallory"), e2e.server, "chat:e2e-auth", `&token=${mint("alice")}`);
  await send(page, "signed in");
  await waitForMessageCount(page, 1);
  assert.deepEqual(await page.locator("#messages .msg-user").allTextContents(), ["alice"]);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test("a page of another origin cannot open a socket", async () => {
  const context = await userContext(e2e.browser, "cross");
  const page = watchProblems(await context.newPage());
  // Same-origin on `other` works (no token needed there)…
  await page.goto(`${other.url}/healthz`);
  const own = other.url.replace("http://", "ws://") + "/socket/websocket?vsn=2.0.0&user=x";
  assert.equal((await openSocket(page, own, null)).opened, true);
  // …but `other`'s page may not reach `server`, even with a valid token.
  const cross = e2e.server.url.replace("http://", "ws://") + `/socket/websocket?vsn=2.0.0&token=${mint("alice")}`;
  assert.deepEqual(await openSocket(page, cross, null), { closed: true });
  const post = await page.evaluate(async (url) => {
    const resp = await fetch(url, { method: "POST", mode: "no-cors", body: new URLSearchParams({ text: "csrf" }) });
    return resp.type;
  }, `${e2e.server.url}/api/rooms/chat:e2e-auth-csrf/messages?token=${mint("alice")}`);
  assert.equal(post, "opaque");
  await context.close();
  const { rooms } = await (await fetch(`${e2e.server.url}/api/rooms`)).json();
  assert.ok(!rooms.some((r) => r.topic === "chat:e2e-auth-csrf"), "the cross-site post never reached a room");
});
