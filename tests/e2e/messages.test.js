// (a) Three tabs (three users, one at phone width) on one room exchange
// messages; every tab shows all of them in the same order.

import { test } from "node:test";
import assert from "node:assert/strict";
import { roomhostAndBrowserForFile, userContext, openChat, send, messageTexts, waitForMessageCount, screenshot } from "./support/browser.js";

const TOPIC = "chat:e2e-messages";
const e2e = roomhostAndBrowserForFile();

test("three tabs exchange messages and show them in the same order", async () => {
  const alice = await openChat(await userContext(e2e.browser, "alice"), e2e.server, TOPIC);
  const bob = await openChat(await userContext(e2e.browser, "bob", { width: 375, height: 720 }), e2e.server, TOPIC);
  const carol = await openChat(await userContext(e2e.browser, "carol"), e2e.server, TOPIC);
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
