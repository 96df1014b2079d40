// (a) Three tabs (three users, one at phone width) on one room exchange
// messages; every tab shows all of them in the same order.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startRoomhost } from "../js/support/roomhost.js";
import { launchBrowser, userContext, openChat, send, messageTexts, waitForMessageCount, screenshot } from "./support/browser.js";

const TOPIC = "chat:e2e-messages";
let server;
let browser;

before(async () => {
  server = await startRoomhost();
  browser = await launchBrowser();
});
after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test("three tabs exchange messages and show them in the same order", async () => {
  const alice = await openChat(await userContext(browser, "alice"), server, TOPIC);
  const bob = await openChat(await userContext(browser, "bob", { width: 375, height: 720 }), server, TOPIC);
  const carol = await openChat(await userContext(browser, "carol"), server, TOPIC);
  const tabs = [alice, bob, carol];

  // Interleaved sends from all three, without waiting in between.
  await Promise.all(tabs.map(async (page, i) => {
    for (let n = 1; n <= 3; n += 1) await send(page, `message ${n} from tab ${i + 1}`);
  }));
  for (const page of tabs) await waitForMessageCount(page, 9);

  const lists = await Promise.all(tabs.map(messageTexts));
  assert.deepEqual(lists[1], lists[0], "bob sees alice's order");
  assert.deepEqual(lists[2], lists[0], "carol sees alice's order");
  for (let i = 1; i <= 3; i += 1) {
    const mine = lists[0].filter((t) => t.endsWith(`from tab ${i}`));
    assert.deepEqual(mine, [1, 2, 3].map((n) => `message ${n} from tab ${i}`), "each sender's messages keep their order");
  }
  // Authors are shown, and a reload of a tab brings the same history back.
  assert.deepEqual(await alice.locator("#messages .msg-user").allTextContents().then((u) => [...new Set(u)].sort()), ["alice", "bob", "carol"]);
  await carol.reload();
  await waitForMessageCount(carol, 9);
  assert.deepEqual(await messageTexts(carol), lists[0], "history after a reload has the same order");

  await screenshot(alice, "a-messages-desktop");
  await screenshot(bob, "a-messages-phone");
  for (const page of tabs) assert.deepEqual(page.problems, []);
});
