// (b) Presence: alice with two tabs and bob with one shows 2 users / 3 tabs
// everywhere; typing in one tab shows the indicator in the others, and it clears.

import { test } from "node:test";
import assert from "node:assert/strict";
import { needs } from "../js/support/roomhost.js";
import { roomhostAndBrowserForFile, userContext, openChat, send, waitForText, screenshot } from "./support/browser.js";

const TOPIC = "chat:e2e-presence";
const e2e = roomhostAndBrowserForFile();

test("presence shows 2 users and 3 tabs; typing shows and clears", needs("presence"), async () => {
  const aliceContext = await userContext(e2e.browser, "alice");
  const alice1 = await openChat(aliceContext, e2e.server, TOPIC);
  const alice2 = await openChat(aliceContext, e2e.server, TOPIC);
  const bob = await openChat(await userContext(e2e.browser, "bob"), e2e.server, TOPIC);
  const tabs = [alice1, alice2, bob];

  for (const page of tabs) {
    await waitForText(page, "#people-count", "2 users · 3 tabs");
    await waitForText(page, '#people li[data-user="alice"] .person-detail', /^2 tabs · online since /);
    await waitForText(page, '#people li[data-user="bob"] .person-detail', /^1 tab · online since /);
  }
  assert.match(await alice1.textContent('#people li[data-user="alice"]'), /\(you\)/);

  // bob types: both alice tabs show it, bob's own tab does not.
  await bob.focus("#composer-input");
  await bob.keyboard.type("hello ali", { delay: 30 });
  for (const page of [alice1, alice2]) {
    await waitForText(page, "#typing", "bob is typing…");
    await waitForText(page, '#people li[data-user="bob"] .person-typing', "typing…");
  }
  assert.equal(await bob.textContent("#typing"), "");
  await screenshot(alice1, "b-presence-typing");

  // Sending clears it.
  await bob.keyboard.type("ce");
  await bob.press("#composer-input", "Enter");
  for (const page of [alice1, alice2]) {
    await page.waitForFunction(() => document.querySelector("#typing").textContent === "", null, { timeout: 8000 });
    await waitForText(page, "#messages .msg-text", "hello alice");
  }

  // Typing then leaving the field (blur) clears it too.
  await alice2.focus("#composer-input");
  await alice2.keyboard.type("draft");
  await waitForText(bob, "#typing", "alice is typing…");
  await alice2.focus("#room-input");
  await bob.waitForFunction(() => document.querySelector("#typing").textContent === "", null, { timeout: 8000 });

  // A tab closing drops a tab from alice's count.
  await alice2.close();
  await waitForText(bob, "#people-count", "2 users · 2 tabs");
  await screenshot(bob, "b-presence-after-close");
  for (const page of [alice1, bob]) assert.deepEqual(page.problems, []);
});
