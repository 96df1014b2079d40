// Chat UI details a new user tripped on: "Kill room" asks first, and the
// focus ring is visible on a light page (WCAG 3:1).

import { test } from "node:test";
import assert from "node:assert/strict";
import { roomhostAndBrowserForFile, userContext, openChat, waitForText, waitJoined, screenshotsOnFailure } from "./support/browser.js";

const TOPIC = "chat:e2e-ui";
const e2e = roomhostAndBrowserForFile();

test("Kill room asks for confirmation; declining does nothing", async () => {
  const pages = [];
  await screenshotsOnFailure("i-chat-kill-confirm", () => pages, async () => {
    const page = await openChat(await userContext(e2e.browser, "alice"), e2e.server, TOPIC);
    pages.push(page);
    await waitJoined(page);
    await page.waitForFunction(() => /^\d+$/.test(document.querySelector("#status-generation").textContent));
    const generation = Number(await page.textContent("#status-generation"));
    // openChat's watcher dismisses every dialog: this test answers them itself.
    page.removeAllListeners("dialog");
    const asked = [];
    page.once("dialog", (dialog) => { asked.push(dialog.message()); dialog.dismiss(); });
    await page.click("#kill-button");
    await page.waitForTimeout(500);
    assert.equal(asked.length, 1, "a confirmation was asked");
    assert.match(asked[0], new RegExp(`Kill ${TOPIC}\\?`));
    assert.equal(Number(await page.textContent("#status-generation")), generation, "declined: not killed");
    page.once("dialog", (dialog) => dialog.accept());
    await page.click("#kill-button");
    await waitForText(page, "#status-generation", String(generation + 1));
  });
});

test("the focus ring has at least 3:1 contrast against the light page", async () => {
  const context = await userContext(e2e.browser, "bob");
  const page = await openChat(context, e2e.server, TOPIC);
  await waitJoined(page);
  const color = await page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue("--focus").trim());
  const lum = (hex) => {
    const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255)
      .map((x) => (x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4));
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const ratio = (1 + 0.05) / (lum(color) + 0.05);
  assert.ok(ratio >= 3, `focus ${color} is ${ratio.toFixed(2)}:1 against white`);
});
