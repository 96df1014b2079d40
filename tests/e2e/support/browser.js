// Browser side of the e2e tests: Debian's chromium driven by playwright-core
// (with a roomhost, started and stopped around a test file's tests by
// roomhostAndBrowserForFile), one browser context per user (the handle lives
// in localStorage), any number of tabs per user, and screenshots under
// target/e2e-screenshots/.

import fs from "node:fs";
import path from "node:path";
import { before, after } from "node:test";
import { chromium } from "playwright-core";
import { REPO_ROOT, roomhostForFile } from "../../js/support/roomhost.js";

export const SCREENSHOT_DIR = path.join(REPO_ROOT, "target", "e2e-screenshots");
export const TIMEOUT_MS = 15000;

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
    timeout: 30000,
  });
}

/**
 * The shared setup of a browser test file: its roomhost (roomhostForFile,
 * with `serverOptions`) and a chromium launched once the server is up and
 * closed before it stops, even when a test failed. Returns
 * `{ server, browser }`, both ready by the time the tests run.
 */
export function roomhostAndBrowserForFile(serverOptions) {
  const e2e = { server: undefined, browser: undefined };
  // Registered before the server's hooks, so it runs before the server stops.
  after(async () => { if (e2e.browser) await e2e.browser.close(); });
  e2e.server = roomhostForFile(serverOptions);
  before(async () => { e2e.browser = await launchBrowser(); });
  return e2e;
}

/** A browser context whose pages use `handle` (set before any page script runs). */
export async function userContext(browser, handle, { width = 1100, height = 720 } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  context.setDefaultTimeout(TIMEOUT_MS);
  // Only the first page sets it, so a handle changed in the UI survives reloads.
  await context.addInitScript((name) => {
    if (!localStorage.getItem("roomhost.handle")) localStorage.setItem("roomhost.handle", name);
  }, handle);
  return context;
}

/**
 * Opens a chat tab on `topic` and waits until it has joined. Every page
 * records its script errors and dialogs in `page.problems` (a dialog would
 * mean user text ran as code, so it is dismissed and recorded).
 */
export async function openChat(context, server, topic, query = "") {
  const page = await context.newPage();
  watchProblems(page);
  await page.goto(`${server.url}/?room=${encodeURIComponent(topic)}${query}`);
  await waitJoined(page);
  return page;
}

export function watchProblems(page) {
  page.problems = [];
  page.on("pageerror", (error) => page.problems.push(`page error: ${error.message}`));
  page.on("dialog", (dialog) => {
    page.problems.push(`dialog: ${dialog.type()} ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  return page;
}

export async function waitJoined(page, timeout = TIMEOUT_MS) {
  await page.waitForSelector('body[data-room-state="joined"]', { timeout });
}

export async function send(page, text) {
  await page.fill("#composer-input", text);
  await page.press("#composer-input", "Enter");
}

export const messageTexts = (page) => page.locator("#messages .msg-text").allTextContents();

/** Waits until the tab shows exactly `count` messages (bounded). */
export async function waitForMessageCount(page, count, timeout = TIMEOUT_MS) {
  await page.waitForFunction((n) => document.querySelectorAll("#messages .msg").length === n, count, { timeout });
}

export async function waitForText(page, selector, pattern, timeout = TIMEOUT_MS) {
  const source = pattern instanceof RegExp ? pattern.source : pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const flags = pattern instanceof RegExp ? pattern.flags : "";
  await page.waitForFunction(([sel, src, fl]) => {
    const re = new RegExp(src, fl);
    return [...document.querySelectorAll(sel)].some((node) => re.test(node.textContent));
  }, [selector, source, flags], { timeout });
}

export async function screenshot(page, name) {
  fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  return file;
}

/**
 * Runs `body`; if it throws, saves a "<name>-FAILED-<n>" screenshot of each
 * page still open before rethrowing, to see what the user would have seen.
 */
export async function screenshotsOnFailure(name, pages, body) {
  try {
    return await body();
  } catch (error) {
    for (const [i, page] of pages().entries()) {
      if (!page.isClosed()) await screenshot(page, `${name}-FAILED-${i + 1}`).catch(() => {});
    }
    throw error;
  }
}
