// The dashboard at phone width (390 px): the rooms table scrolls sideways
// with a hint, each room's Kill button stays in view and works, and the
// column that stays in view never hides another column's value for good.

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

    // Scrolled fully left, the Gen. value is in view and nothing covers it;
    // scrolled fully right, Kill is still in view.
    const layout = (scroll) => admin.evaluate(([topic, scrollTo]) => {
      const wrap = document.querySelector(".table-wrap");
      wrap.scrollLeft = scrollTo === "max" ? wrap.scrollWidth : scrollTo;
      const rect = (el) => { const r = el.getBoundingClientRect(); return { left: r.left, right: r.right }; };
      const row = document.querySelector(`tr[data-topic="${topic}"]`);
      const all = [...row.children];
      const stickies = all.filter((el) => getComputedStyle(el).position === "sticky").map(rect);
      // Columns shown (the Node column is there in cluster mode only).
      const cells = all.filter((el) => el.tagName === "TD" && getComputedStyle(el).display !== "none")
        .map((td) => ({ col: td.dataset.col, ...rect(td) }));
      return { wrap: rect(wrap), stickies, cells, kill: rect(row.querySelector("button.danger")) };
    }, [TOPIC, scroll]);
    // In view and under no cell that stays put (1 px of slack: offsets are
    // whole pixels, boxes are not).
    const seen = (cell, { wrap, stickies }) => cell.left >= wrap.left - 1 && cell.right <= wrap.right + 1
      && stickies.every((s) => cell.right <= s.left + 1 || cell.left >= s.right - 1);
    const left = await layout(0);
    const gen = left.cells.find((c) => c.col === "generation");
    assert.ok(seen(gen, left), `the Gen. cell is in view and not covered: ${JSON.stringify({ gen, ...left })}`);
    const right = await layout("max");
    assert.ok(right.kill.left >= right.wrap.left && right.kill.right <= right.wrap.right, `Kill in view, scrolled right: ${JSON.stringify(right.kill)}`);
    // Every column can be read: scrolled next to the column that stays, it is uncovered.
    for (const { col } of left.cells) {
      const offset = await admin.evaluate(([topic, name]) => {
        const row = document.querySelector(`tr[data-topic="${topic}"]`);
        const stuckLeft = [...row.children].filter((el) => getComputedStyle(el).position === "sticky" && getComputedStyle(el).left !== "auto");
        return row.querySelector(`td[data-col="${name}"]`).offsetLeft - stuckLeft.reduce((w, el) => w + el.offsetWidth, 0);
      }, [TOPIC, col]);
      const at = await layout(Math.max(0, offset));
      const cell = at.cells.find((c) => c.col === col);
      assert.ok(seen(cell, at), `${col} can be read when scrolled to: ${JSON.stringify({ cell, ...at })}`);
    }
    await admin.evaluate(() => { document.querySelector(".table-wrap").scrollLeft = 0; });
    await kill.click();
    await waitForText(admin, "#action-status", `Killed ${TOPIC}`);
    // The totals card counts the rooms the table lists.
    await waitForText(admin, "#total-rooms", "1");
    assert.equal((await admin.textContent("#rooms-count")).trim(), "(1)");
    assert.deepEqual(admin.problems, []);
  });
});
