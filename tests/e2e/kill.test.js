// (c) The dashboard's kill button: every chat tab shows "room restarted —
// generation N", rejoins by itself, keeps its history and gets presence back.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startRoomhost, skippedFeatures } from "../js/support/roomhost.js";
import {
  launchBrowser, userContext, openChat, send, messageTexts, waitForMessageCount, waitForText, waitJoined,
  screenshot, screenshotsOnFailure, watchProblems,
} from "./support/browser.js";

const TOPIC = "chat:e2e-kill";
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

test("kill from the dashboard: tabs show the restart notice and rejoin with history and presence", async (t) => {
  const pages = [];
  await screenshotsOnFailure("c-kill", () => pages, async () => {
    const alice = await openChat(await userContext(browser, "alice"), server, TOPIC);
    const bob = await openChat(await userContext(browser, "bob"), server, TOPIC);
    const tabs = [alice, bob];
    pages.push(...tabs);
    await send(alice, "before the crash");
    await send(bob, "me too");
    for (const page of tabs) await waitForMessageCount(page, 2);
    for (const page of tabs) await page.waitForFunction(() => /^\d+$/.test(document.querySelector("#status-generation").textContent));
    const generation = Number(await alice.textContent("#status-generation"));

    const admin = watchProblems(await (await userContext(browser, "admin")).newPage());
    pages.push(admin);
    await admin.goto(`${server.url}/admin`);
    const killButton = admin.getByRole("button", { name: `Kill ${TOPIC}` });
    await killButton.waitFor();
    await killButton.click();
    await waitForText(admin, "#action-status", `Killed ${TOPIC}`);

    const notice = /room restarted — generation (\d+)/;
    for (const page of tabs) {
      await waitForText(page, ".notice-restart", notice);
      await waitJoined(page);
      const shown = (await page.textContent(".notice-restart")).match(notice);
      assert.ok(Number(shown[1]) > generation, `generation went up (${generation} → ${shown[1]})`);
      assert.equal(await page.textContent("#status-generation"), shown[1]);
      assert.deepEqual(await messageTexts(page), ["before the crash", "me too"], "history intact, no duplicates");
    }

    // The room works again.
    await send(bob, "after the crash");
    for (const page of tabs) await waitForMessageCount(page, 3);
    await waitForText(admin, `tr[data-topic="${TOPIC}"] .state`, "running");
    await waitForText(admin, `tr[data-topic="${TOPIC}"] td[data-col="channels"]`, /^2$/);
    await screenshot(alice, "c-kill-chat-tab");
    await admin.getByRole("button", { name: `Show console of ${TOPIC}` }).click();
    await screenshot(admin, "c-kill-dashboard");
    for (const page of pages) assert.deepEqual(page.problems, []);

    // Presence is back once the tabs have rejoined (needs server presence).
    if (skippedFeatures.has("presence")) {
      t.diagnostic("presence check skipped: waits on server presence (ROOMHOST_TEST_SKIP)");
    } else {
      for (const page of tabs) await waitForText(page, "#people-count", "2 users · 2 tabs");
    }
  });
});
