// Room switching, the URL, recent rooms, the handle, and refused joins.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  roomhostAndBrowserForFile, userContext, openChat, send, messageTexts, waitForMessageCount, waitForText, waitJoined,
  screenshot, screenshotsOnFailure, watchProblems,
} from "./support/browser.js";

const e2e = roomhostAndBrowserForFile();

test("switching rooms updates the URL and recent rooms; Back returns; the handle can change", async () => {
  const pages = [];
  await screenshotsOnFailure("h-rooms", () => pages, async () => {
    const page = await openChat(await userContext(e2e.browser, "roamer"), e2e.server, "chat:e2e-rooms-a");
    pages.push(page);
    await send(page, "in room a");
    await waitForMessageCount(page, 1);

    await page.fill("#room-input", "e2e-rooms-b");
    await page.press("#room-input", "Enter");
    await page.waitForURL(/\?room=chat:e2e-rooms-b$/);
    await waitJoined(page);
    assert.deepEqual(await messageTexts(page), []);
    assert.deepEqual(await page.locator("#recent-list .chip").allTextContents(), ["chat:e2e-rooms-b", "chat:e2e-rooms-a"]);
    assert.equal(await page.title(), "chat:e2e-rooms-b · roomhost");

    await page.goBack();
    await page.waitForURL(/\?room=chat:e2e-rooms-a$/);
    await waitJoined(page);
    await waitForMessageCount(page, 1);
    assert.equal(await page.inputValue("#room-input"), "chat:e2e-rooms-a");

    // An invalid room name is explained and nothing changes.
    await page.fill("#room-input", "bad room!");
    await page.press("#room-input", "Enter");
    await waitForText(page, "#room-error", /kind:name/);
    assert.match(page.url(), /chat:e2e-rooms-a$/);

    // A new handle: the socket reconnects and messages carry the new name.
    await page.fill("#handle-input", "renamed user");
    await page.press("#handle-input", "Enter");
    assert.equal(await page.inputValue("#handle-input"), "renamed-user");
    await waitJoined(page);
    await send(page, "after the rename");
    await waitForMessageCount(page, 2);
    assert.deepEqual(await page.locator("#messages .msg-user").allTextContents(), ["roamer", "renamed-user"]);
    await page.reload();
    await waitJoined(page);
    assert.equal(await page.inputValue("#handle-input"), "renamed-user", "the handle is remembered");
    await screenshot(page, "h-rooms-renamed");
    assert.deepEqual(page.problems, []);
  });
});

test("a refused join is shown with the server's reason", async () => {
  const pages = [];
  await screenshotsOnFailure("h-refused", () => pages, async () => {
    const page = watchProblems(await (await userContext(e2e.browser, "lost")).newPage());
    pages.push(page);
    await page.goto(`${e2e.server.url}/?room=nosuchkind:x`);
    await waitForText(page, ".notice-error", "Cannot join nosuchkind:x: unknown room kind");
    await waitForText(page, "#status-room-state", /^refused$/);
    await waitForText(page, "#messages-empty", "You are not in nosuchkind:x: unknown room kind.");
    assert.deepEqual(await page.locator("#recent-list .chip").allTextContents(), [], "refused rooms are not remembered");
    await screenshot(page, "h-refused-join");
    assert.deepEqual(page.problems, []);
  });
});
