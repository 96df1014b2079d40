// Chat UI details a new user tripped on: "Kill room" asks first, the focus
// ring is visible on a light page (WCAG 3:1), a room of another kind gets a
// panel instead of a composer, links are clickable and safe, name colours
// are distinct and readable, and times read as on the dashboard.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  roomhostAndBrowserForFile, userContext, openChat, send, waitForMessageCount, waitForText, waitJoined, screenshot, screenshotsOnFailure,
} from "./support/browser.js";

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

test("a room that is not a chat room gets a panel saying so, not a composer that can only fail", async () => {
  const pages = [];
  await screenshotsOnFailure("i-chat-poll-room", () => pages, async () => {
    const page = await openChat(await userContext(e2e.browser, "carol"), e2e.server, "poll:e2e-demo");
    pages.push(page);
    await waitForText(page, "#kind-title", "poll:e2e-demo is a “poll” room");
    assert.equal(await page.isVisible("#composer"), false, "no composer");
    assert.equal(await page.isVisible("#messages-scroller"), false, "no message list");
    assert.equal(await page.locator(".skip-link").isHidden(), true, "no skip link to a composer that is not there");
    assert.match(await page.textContent("#kind-text"), /chat client.*new_msg.*rooms-js\/poll\.js/s);
    // It shows what the room answered the join, and its broadcasts as they come.
    await waitForText(page, "#kind-state", /"poll": null/);
    const created = await fetch(`${e2e.server.url}/api/rooms/poll%3Ae2e-demo/messages?user=carol`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ event: "create", payload: { question: "Tea or coffee?", options: ["tea", "coffee"] } }),
      signal: AbortSignal.timeout(10000),
    });
    assert.equal(created.status, 200, await created.text());
    await waitForText(page, "#kind-events", /Tea or coffee\?/);
    await screenshot(page, "i-chat-poll-room");
    // A chat room in the same tab brings the composer back.
    await page.fill("#room-input", "chat:e2e-after-poll");
    await page.press("#room-input", "Enter");
    await waitJoined(page);
    await page.waitForSelector("#composer", { state: "visible" });
    assert.equal(await page.isVisible("#kind-panel"), false);
    assert.deepEqual(page.problems, []);
  });
});

test("links in messages open safely in a new tab; other schemes stay text", async () => {
  const page = await openChat(await userContext(e2e.browser, "dave"), e2e.server, "chat:e2e-links");
  await send(page, "docs at https://example.com/guide?a=1&b=2, and javascript:alert(1) and <b>bold</b>");
  await waitForMessageCount(page, 1);
  const links = await page.$$eval("#messages .msg-text a", (as) => as.map((a) => ({
    href: a.getAttribute("href"), text: a.textContent, target: a.target, rel: a.rel,
  })));
  assert.deepEqual(links, [{
    href: "https://example.com/guide?a=1&b=2", text: "https://example.com/guide?a=1&b=2", target: "_blank", rel: "noopener noreferrer",
  }]);
  assert.equal(await page.textContent("#messages .msg-text"), "docs at https://example.com/guide?a=1&b=2, and javascript:alert(1) and <b>bold</b>");
  assert.equal(await page.locator("#messages .msg-text b").count(), 0, "user text is never HTML");
  assert.deepEqual(page.problems, []);
});

// WCAG's contrast ratio of two CSS rgb() colours.
function contrast(a, b) {
  const lum = (css) => {
    const [r, g, bl] = css.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number).map((v) => v / 255)
      .map((x) => (x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4));
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl;
  };
  const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

for (const scheme of ["light", "dark"]) {
  test(`name colours (${scheme}): ten distinct hues, each at least 4.5:1 on a message and an own message`, async () => {
    const context = await userContext(e2e.browser, "erin");
    const page = await context.newPage();
    await page.emulateMedia({ colorScheme: scheme });
    await page.goto(`${e2e.server.url}/?room=chat:e2e-colours`);
    await waitJoined(page);
    const colours = await page.evaluate(() => {
      const list = document.querySelector("#messages");
      const out = [];
      for (let i = 0; i < 10; i += 1) {
        for (const own of [false, true]) {
          const item = document.createElement("li");
          item.className = own ? "msg own" : "msg";
          const name = document.createElement("span");
          name.className = `msg-user user-c${i}`;
          name.textContent = "name";
          item.append(name);
          list.append(item);
          const bg = getComputedStyle(item).backgroundColor;
          out.push({ i, own, color: getComputedStyle(name).color, background: bg === "rgba(0, 0, 0, 0)" ? getComputedStyle(document.querySelector(".chat")).backgroundColor : bg });
          item.remove();
        }
      }
      return out;
    });
    for (const { i, own, color, background } of colours) {
      const ratio = contrast(color, background);
      assert.ok(ratio >= 4.5, `user-c${i}${own ? " (own)" : ""}: ${color} on ${background} is ${ratio.toFixed(2)}:1`);
    }
    const distinct = new Set(colours.map((c) => c.color));
    assert.equal(distinct.size, 10, `ten different colours: ${[...distinct]}`);
    await context.close();
  });
}

test("the chat and the dashboard write times the same way", async () => {
  const page = await openChat(await userContext(e2e.browser, "frank"), e2e.server, "chat:e2e-times");
  await send(page, "what time is it");
  await waitForMessageCount(page, 1);
  const chatTime = (await page.textContent("#messages .msg-time")).trim();
  const admin = await (await userContext(e2e.browser, "admin")).newPage();
  await admin.goto(`${e2e.server.url}/admin`);
  await waitForText(admin, "#updated", /^\d\d:\d\d:\d\d$/);
  const updated = (await admin.textContent("#updated")).trim();
  // The same 24-hour clock, the dashboard with seconds: "18:05" and "18:05:09"
  // (not "06:05 PM" beside "6:05:09 PM").
  assert.match(chatTime, /^\d\d:\d\d$/);
  assert.match(updated, /^\d\d:\d\d:\d\d$/);
});
