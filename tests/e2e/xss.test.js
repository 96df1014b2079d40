// (e) User text is text: markup in a message shows literally and never runs.
// Also: a blank message shows the inline error and is not sent.

import { test } from "node:test";
import assert from "node:assert/strict";
import { roomhostAndBrowserForFile, userContext, openChat, send, messageTexts, waitForMessageCount, waitForText, screenshot } from "./support/browser.js";

const TOPIC = "chat:e2e-xss";
const e2e = roomhostAndBrowserForFile();

test("an <img onerror> message renders as text and no dialog fires", async () => {
  const attacker = await openChat(await userContext(e2e.browser, "<b>mallory</b>"), e2e.server, TOPIC);
  const victim = await openChat(await userContext(e2e.browser, "victim"), e2e.server, TOPIC);
  const payloads = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    '<img src=x onerror="window.__pwned=1">',
  ];
  for (const text of payloads) await send(attacker, text);
  for (const page of [attacker, victim]) await waitForMessageCount(page, payloads.length);

  for (const page of [attacker, victim]) {
    assert.deepEqual(await messageTexts(page), payloads, "shown literally");
    assert.equal(await page.locator("#messages img, #messages script, #messages b").count(), 0, "no elements from user text");
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    assert.deepEqual(page.problems, [], "no dialog, no script error");
  }
  await waitForText(victim, "#messages .msg-user", "<b>mallory</b>");

  // Blank input: inline error, nothing sent.
  await send(victim, "   ");
  await waitForText(victim, "#composer-error", "message is blank");
  assert.equal(await victim.getAttribute("#composer-input", "aria-invalid"), "true");
  await screenshot(victim, "e-xss-as-text");
  assert.equal((await messageTexts(attacker)).length, payloads.length);
});

test("keyboard only: skip link to the composer, Enter sends, Escape clears; buttons are named", async () => {
  const page = await openChat(await userContext(e2e.browser, "keys"), e2e.server, TOPIC);
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.className), "skip-link");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.activeElement.id === "composer-input");
  await page.keyboard.type("sent with the keyboard");
  await page.keyboard.press("Enter");
  await waitForText(page, "#messages .msg-text", "sent with the keyboard");
  await page.keyboard.type("never sent");
  await page.keyboard.press("Escape");
  assert.equal(await page.inputValue("#composer-input"), "");

  const unnamed = await page.evaluate(() => [...document.querySelectorAll("button, input, a")]
    .filter((node) => !(node.getAttribute("aria-label") || node.textContent.trim() || (node.id && document.querySelector(`label[for="${node.id}"]`))))
    .map((node) => node.outerHTML));
  assert.deepEqual(unnamed, [], "every control has an accessible name");
  await page.setViewportSize({ width: 375, height: 700 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling at 375 px (overflow ${overflow}px)`);
  await screenshot(page, "e-keyboard-phone");
  assert.deepEqual(page.problems, []);
});
