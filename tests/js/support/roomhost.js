// Starts the real roomhost binary for a test file and stops it afterwards
// (roomhostForFile does both from node:test's before/after hooks).
//
// The binary comes from ROOMHOST_BIN, else target/debug/roomhost of this
// repository. It listens on an ephemeral port (`--port 0`) and we wait for the
// "listening on http://127.0.0.1:<port>" line; every wait is bounded and the
// server is killed (TERM, then KILL) even when a test fails.

import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { before, after } from "node:test";

export const TESTS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const REPO_ROOT = path.resolve(TESTS_DIR, "..");
const START_TIMEOUT_MS = 30000;
const STOP_TIMEOUT_MS = 5000;

export function roomhostBin() {
  return process.env.ROOMHOST_BIN || path.join(TESTS_DIR, "..", "target", "debug", "roomhost");
}

const running = new Set();
process.on("exit", () => { for (const child of running) child.kill("SIGKILL"); });

/** Copies the repository's rooms-js/ into a temp dir (for tests that edit scripts). */
export function copyRoomsDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomhost-rooms-"));
  fs.cpSync(path.join(REPO_ROOT, "rooms-js"), dir, { recursive: true });
  return dir;
}

/**
 * Starts `roomhost serve`. Options: roomsDir (default: the repo's rooms-js),
 * env (extra environment), args (extra CLI arguments), port (default 0: an
 * ephemeral one; give the port of a stopped server to restart it there) and
 * dataDir (default: a fresh temp dir, removed by stop(); one given is kept,
 * so a restarted server finds its rooms' durable state).
 * Resolves to { url, port, endpoint, roomsDir, dataDir, output(), stop() }.
 */
export async function startRoomhost({ roomsDir = path.join(REPO_ROOT, "rooms-js"), env = {}, args = [], port: askedPort = 0, dataDir: givenDataDir } = {}) {
  const bin = roomhostBin();
  if (!fs.existsSync(bin)) {
    throw new Error(`roomhost binary not found at ${bin}: run \`cargo build\` first or set ROOMHOST_BIN`);
  }
  const dataDir = givenDataDir || fs.mkdtempSync(path.join(os.tmpdir(), "roomhost-data-"));
  const removeData = () => { if (!givenDataDir) fs.rmSync(dataDir, { recursive: true, force: true }); };
  const child = spawn(bin, ["serve", "--port", String(askedPort), "--rooms", roomsDir, "--data", dataDir, ...args], {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  let output = "";
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => {
    running.delete(child);
    resolve({ code, signal });
  }));
  child.stderr.on("data", (chunk) => { output += chunk; });

  const url = await new Promise((resolve, reject) => {
    let stdout = "";
    const timer = setTimeout(() => reject(new Error(`roomhost did not print "listening on" within ${START_TIMEOUT_MS} ms\n${tail(output + stdout)}`)), START_TIMEOUT_MS);
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      output += chunk;
      const match = stdout.match(/listening on (http:\/\/[^\s]+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1].replace(/\/$/, ""));
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`roomhost exited early (code ${code}, signal ${signal})\n${tail(output + stdout)}`));
    });
  }).catch(async (error) => {
    child.kill("SIGKILL");
    removeData();
    throw error;
  });

  const port = Number(new URL(url).port);
  return {
    url,
    port,
    endpoint: `ws://127.0.0.1:${port}/socket`,
    roomsDir,
    dataDir,
    output: () => output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const done = await Promise.race([exited, sleep(STOP_TIMEOUT_MS).then(() => null)]);
        if (!done) {
          child.kill("SIGKILL");
          await Promise.race([exited, sleep(STOP_TIMEOUT_MS)]);
        }
      }
      removeData();
    },
  };
}

/**
 * The roomhost of the calling test file: started (with `options`, as for
 * startRoomhost) before the file's tests and stopped after them, even when
 * one failed. Returns the server object of startRoomhost, empty at first
 * and filled in by the time the tests run, so the file can name it once.
 */
export function roomhostForFile(options) {
  const server = {};
  before(async () => { Object.assign(server, await startRoomhost(options)); });
  after(async () => { if (server.stop) await server.stop(); });
  return server;
}

/** A connection token for `user` signed with `secret`, from `roomhost token` (valid 10 minutes). */
export function mintToken(user, secret) {
  const env = { ...process.env, ROOMHOST_SECRET: secret };
  delete env.ROOMHOST_SECRET_FILE;
  return execFileSync(roomhostBin(), ["token", "--user", user, "--ttl", "10m"], { env, encoding: "utf8" }).trim();
}

/** Calls the HTTP API; resolves to { status, body } (body parsed as JSON when it is JSON). */
export async function api(server, method, pathname, { headers = {}, timeoutMs = 10000 } = {}) {
  const resp = await fetch(`${server.url}${pathname}`, { method, headers, signal: AbortSignal.timeout(timeoutMs) });
  const text = await resp.text();
  let body = text;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  return { status: resp.status, body };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const tail = (text) => text.split("\n").slice(-30).join("\n");

/**
 * Server features a test needs. While a feature is not built yet, list it in
 * ROOMHOST_TEST_SKIP (comma-separated: presence, reload, longpoll,
 * admin-page) and its tests are skipped with that reason instead of failing;
 * remove it from the list when the feature lands.
 */
export const skippedFeatures = new Set(
  (process.env.ROOMHOST_TEST_SKIP || "").split(",").map((s) => s.trim()).filter(Boolean),
);

/** Options for node:test's `test()`: skipped while any of `features` is listed. */
export function needs(...features) {
  const missing = features.filter((f) => skippedFeatures.has(f));
  return missing.length ? { skip: `waits on server feature(s) ${missing.join(", ")} (ROOMHOST_TEST_SKIP)` } : {};
}
