// (d) Hot reload: the test runs the server on a copy of rooms-js/, edits
// chat.js on disk, and every tab shows "room code reloaded (v…)"; the new
// behaviour (messages prefixed "[v2] ") works and the old messages stay.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { copyRoomsDir, needs } from "../js/support/roomhost.js";
import {
  roomhostAndBrowserForFile, userContext, openChat, send, messageTexts, waitForMessageCount, waitForText, screenshot, watchProblems,
} from "./support/browser.js";

const TOPIC = "chat:e2e-reload";
// The server runs on a copy of rooms-js/, which the tests edit.
const roomsDir = copyRoomsDir();
const e2e = roomhostAndBrowserForFile({ roomsDir });
after(() => fs.rmSync(roomsDir, { recursive: true, force: true }));

/**
 * chat.js with a visible change: its onMessage is renamed and wrapped so new
 * messages get a "[v2] " prefix. Everything else (state, snapshot/restore)
 * is the shipped script, so the reload carries the room's state over.
 */
function withPrefix(source) {
  const patterns = [
    [/export\s+(async\s+)?function\s+onMessage\s*\(/, (m, isAsync) => `${isAsync || ""}function __v1_onMessage(`],
    [/export\s+const\s+onMessage\s*=/, () => "const __v1_onMessage ="],
  ];
  for (const [pattern, replacement] of patterns) {
    if (pattern.test(source)) {
      return `${source.replace(pattern, replacement)}

// Added by tests/e2e/reload.test.js: the "v2" behaviour.
export function onMessage(conn, event, payload) {
  if (event === "new_msg" && payload && typeof payload.text === "string" && payload.text.trim() !== "") {
    payload = { ...payload, text: "[v2] " + payload.text.trim() };
  }
  return __v1_onMessage(conn, event, payload);
}
`;
    }
  }
  throw new Error("cannot find `export function onMessage` in rooms-js/chat.js to wrap");
}

test("editing chat.js on disk reloads every tab's room in place", needs("reload"), async () => {
  const alice = await openChat(await userContext(e2e.browser, "alice"), e2e.server, TOPIC);
  const bob = await openChat(await userContext(e2e.browser, "bob"), e2e.server, TOPIC);
  const tabs = [alice, bob];
  await send(alice, "written by v1");
  for (const page of tabs) await waitForMessageCount(page, 1);
  const versionBefore = await alice.textContent("#status-version");

  const file = path.join(roomsDir, "chat.js");
  fs.writeFileSync(file, withPrefix(fs.readFileSync(file, "utf8")));

  for (const page of tabs) {
    await waitForText(page, ".notice-reload .notice-text", /^room code reloaded \(v.+\)$/, 20000);
    await page.waitForFunction((before) => document.querySelector("#status-version").textContent !== before, versionBefore);
  }
  await send(bob, "written by v2");
  for (const page of tabs) {
    await waitForMessageCount(page, 2);
    assert.deepEqual(await messageTexts(page), ["written by v1", "[v2] written by v2"]);
    assert.equal(await page.locator(".notice-restart").count(), 0, "a reload is not shown as a restart");
  }
  await screenshot(alice, "d-reload");
  for (const page of tabs) assert.deepEqual(page.problems, []);
});

test("a syntax error in chat.js is reported to the tabs and the old code keeps running", needs("reload"), async () => {
  const carol = await openChat(await userContext(e2e.browser, "carol"), e2e.server, TOPIC);
  const file = path.join(roomsDir, "chat.js");
  const good = fs.readFileSync(file, "utf8");
  fs.writeFileSync(file, `${good}\nexport function broken( {\n`);
  try {
    await waitForText(carol, ".notice-error", /^Script error/, 20000);
    await waitForText(carol, ".notice-error .notice-detail", /chat\.js:\d+/);
    await screenshot(carol, "d-script-error");
    const admin = watchProblems(await (await userContext(e2e.browser, "admin")).newPage());
    await admin.goto(`${e2e.server.url}/admin`);
    await waitForText(admin, `tr[data-topic="${TOPIC}"] td[data-col="error"]`, /chat\.js:\d+:\d+ SyntaxError/);
    await screenshot(admin, "d-script-error-dashboard");
    await send(carol, "still works");
    await waitForText(carol, "#messages .msg-text", "still works");
  } finally {
    fs.writeFileSync(file, good);
  }
});
