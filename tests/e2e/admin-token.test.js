// The dashboard with ROOMHOST_ADMIN_TOKEN set: the page asks for the token,
// explains a 403/401, and works once the right token is given (kept for the
// tab in sessionStorage, sent as Authorization: Bearer).

import { test } from "node:test";
import assert from "node:assert/strict";
import { api, needs } from "../js/support/roomhost.js";
import { roomhostAndBrowserForFile, userContext, watchProblems, waitForText, screenshot, screenshotsOnFailure } from "./support/browser.js";

const TOKEN = "e2e-secret-token";
const e2e = roomhostAndBrowserForFile({ env: { ROOMHOST_ADMIN_TOKEN: TOKEN } });

test("the API refuses requests without the token", async () => {
  assert.ok([401, 403].includes((await api(e2e.server, "GET", "/api/rooms")).status));
  const ok = await api(e2e.server, "GET", "/api/rooms", { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(ok.status, 200);
});

test("a wrong token is explained; the right one (from ?token= or the field) works", needs("admin-page"), async () => {
  const pages = [];
  await screenshotsOnFailure("g-admin-token", () => pages, async () => {
    const page = watchProblems(await (await userContext(e2e.browser, "admin")).newPage());
    pages.push(page);
    await page.goto(`${e2e.server.url}/admin?token=wrong`);
    assert.ok(!page.url().includes("token="), "the token is taken out of the address");
    await waitForText(page, "#banner", /Not authorised .*token was refused/);
    await screenshot(page, "g-admin-token-refused");

    await page.fill("#token-input", TOKEN);
    await page.press("#token-input", "Enter");
    await page.waitForFunction(() => document.querySelector("#banner").hidden, null, { timeout: 10000 });
    await waitForText(page, "#updated", /\d/);

    // Another tab that opens /admin?token=<right> works straight away.
    const second = watchProblems(await (await userContext(e2e.browser, "admin2")).newPage());
    pages.push(second);
    await second.goto(`${e2e.server.url}/admin?token=${TOKEN}`);
    await waitForText(second, "#updated", /\d/);
    assert.equal(await second.isHidden("#banner"), true);
    for (const p of pages) assert.deepEqual(p.problems, []);
  });
});
