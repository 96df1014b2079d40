// (f) Transport fallback: a tab forced onto Phoenix long-poll
// (`?transport=longpoll`) chats with a WebSocket tab.

import { test } from "node:test";
import assert from "node:assert/strict";
import { needs } from "../js/support/roomhost.js";
import { roomhostAndBrowserForFile, userContext, openChat, send, messageTexts, waitForMessageCount, waitForText, screenshot } from "./support/browser.js";

const TOPIC = "chat:e2e-longpoll";
const e2e = roomhostAndBrowserForFile();

test("a long-poll tab and a WebSocket tab exchange messages and see each other", needs("longpoll", "presence"), async () => {
  const poller = await openChat(await userContext(e2e.browser, "poller"), e2e.server, TOPIC, "&transport=longpoll");
  const socketTab = await openChat(await userContext(e2e.browser, "socketeer"), e2e.server, TOPIC);
  assert.equal(await poller.isVisible("#status-transport"), true, "the status says long-poll");
  await send(poller, "over long-poll");
  await send(socketTab, "over websocket");
  for (const page of [poller, socketTab]) {
    await waitForMessageCount(page, 2);
    await waitForText(page, "#people-count", "2 users · 2 tabs");
  }
  assert.deepEqual(await messageTexts(poller), await messageTexts(socketTab));
  await screenshot(poller, "f-longpoll");
  for (const page of [poller, socketTab]) assert.deepEqual(page.problems, []);
});
