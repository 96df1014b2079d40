// The dashboard at phone width (390 px): the rooms table scrolls sideways
// with a hint, and each room's Kill button stays in view and works.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  roomhostAndBrowserForFile, userContext, openChat, waitForText, waitJoined, screenshot, screenshotsOnFailure, watchProblems,
} from "./support/browser.js";

const TOPIC = "chat:e2e-phone";
const e2e = roomhostAndBrowserForFile();

test("at 390 px the table scrolls with a hint and Kill is in view", async () => {
  const pages = [];
  await screenshotsOnFailure("h-dashboard-phone", () => pages, async () => {
    const chat = await openChat(await userContext(e2e.browser, "alice"), e2e.server, TOPIC);
    pages.push(chat);
    await waitJoined(chat);
    const admin = watchProblems(await (await userContext(e2e.browser, "admin", { width: 390, height: 800 })).newPage());
    pages.push(admin);
    await admin.goto(`${e2e.server.url}/admin`);
    const kill = admin.getByRole("button", { name: `Kill ${TOPIC}` });
    await kill.waitFor();
    assert.equal(await admin.isVisible(".scroll-hint"), true, "the scroll hint shows on a phone");
    const wrap = await admin.$eval(".table-wrap", (el) => ({ scroll: el.scrollWidth, client: el.clientWidth }));
    assert.ok(wrap.scroll > wrap.client, `the table is wider than the screen (${JSON.stringify(wrap)})`);
    const box = await kill.boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 390, `Kill is inside the viewport: ${JSON.stringify(box)}`);
    await screenshot(admin, "h-dashboard-390");
    await kill.click();
    await waitForText(admin, "#action-status", `Killed ${TOPIC}`);
    // The totals card counts the rooms the table lists.
    await waitForText(admin, "#total-rooms", "1");
    assert.equal((await admin.textContent("#rooms-count")).trim(), "(1)");
    assert.deepEqual(admin.problems, []);
  });
});
