// (e) User text is text: markup in a message shows literally and never runs.
// Also: a blank message shows the inline error and is not sent.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startRoomhost } from "../js/support/roomhost.js";
import { launchBrowser, userContext, openChat, send, messageTexts, waitForMessageCount, waitForText, screenshot } from "./support/browser.js";

const TOPIC = "chat:e2e-xss";
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

test("an <img onerror> message renders as text and no dialog fires", async () => {
  const attacker = await openChat(await userContext(browser, "<b>mallory</b>"), server, TOPIC);
  const victim = await openChat(await userContext(browser, "victim"), server, TOPIC);
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
