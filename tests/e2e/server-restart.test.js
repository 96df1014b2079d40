// The chat tab across a server restart: the server stops for about 9 s and
// comes back on the same port with the same data. The tab rejoins with its
// history, says that the server restarted (the room's generation went down:
// generations count per server run), and ends up on the WebSocket again even
// when it had to fall back to long-poll on the way.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startRoomhost, api } from "../js/support/roomhost.js";
import {
  launchBrowser, userContext, openChat, send, waitForMessageCount, waitForText, waitJoined, messageTexts,
  screenshot, screenshotsOnFailure,
} from "./support/browser.js";

const TOPIC = "chat:e2e-restart";
const OUTAGE_MS = 9000;
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "roomhost-restart-"));
const running = { server: null, browser: null };
after(async () => {
  if (running.browser) await running.browser.close();
  if (running.server) await running.server.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

test("after a 9 s outage the tab is back on the WebSocket and says the server restarted", async () => {
  running.server = await startRoomhost({ dataDir });
  const { port } = running.server;
  running.browser = await launchBrowser();
  const pages = [];
  await screenshotsOnFailure("j-server-restart", () => pages, async () => {
    const tab = await openChat(await userContext(running.browser, "alice"), running.server, TOPIC);
    pages.push(tab);
    assert.equal(await tab.getAttribute("body", "data-transport"), "websocket");
    await send(tab, "before the outage");
    await waitForMessageCount(tab, 1);
    // Generation 2 in this server run.
    assert.equal((await api(running.server, "POST", `/api/rooms/${TOPIC}/kill`)).status, 200);
    await waitForText(tab, "#status-generation", /^2$/);

    // While the server is away, the tab's WebSockets cannot open either (as
    // behind a proxy that is slow to pass them again): when the server is
    // back the tab lands on long-poll, deterministically.
    await tab.evaluate(() => {
      window.realWebSocket = window.WebSocket;
      window.WebSocket = class extends window.realWebSocket {
        constructor(url, protocols) { super(String(url).replace(/\/socket\/websocket/, "/no-websocket-here"), protocols); }
      };
    });
    await running.server.stop();
    running.server = null;
    await waitForText(tab, "#status-conn", /^(reconnecting|offline)$/);
    await tab.waitForTimeout(OUTAGE_MS);
    await waitForText(tab, "#status-conn", /^offline$/);
    running.server = await startRoomhost({ dataDir, port });
    assert.equal(running.server.port, port, "the same port");

    // Back over long-poll, with the history, and told why the generation is 1.
    await tab.waitForSelector('body[data-transport="longpoll"][data-room-state="joined"][data-conn="connected"]', { timeout: 20000 });
    await waitForText(tab, "#status-generation", /^1$/);
    await waitForText(tab, ".notice-restart", `The server restarted — ${TOPIC} is at generation 1 again`);
    assert.deepEqual(await messageTexts(tab), ["before the outage"]);
    assert.equal(await tab.isVisible("#status-transport"), true, "the long-poll badge shows");

    // The WebSocket works again: the tab moves back to it by itself.
    await tab.evaluate(() => { window.WebSocket = window.realWebSocket; });
    await tab.waitForSelector('body[data-transport="websocket"][data-room-state="joined"][data-conn="connected"]', { timeout: 30000 });
    assert.equal(await tab.isVisible("#status-transport"), false, "no long-poll badge");
    // The long-poll session left its room as the tab moved: one tab, not two.
    await waitForText(tab, "#people-count", "1 user · 1 tab", 5000);
    await send(tab, "after the restart");
    await waitForMessageCount(tab, 2);
    assert.deepEqual(await messageTexts(tab), ["before the outage", "after the restart"]);
    await waitJoined(tab);
    await screenshot(tab, "j-chat-after-server-restart");
    assert.deepEqual(tab.problems, []);
  });
});
