// deploy/roomhost.service, as far as it can be tested without booting
// systemd: `systemd-analyze verify` accepts it with no warning (an unknown
// key or a bad value is only a warning there, so any output fails), and the
// real binary started the way the unit starts it — its Environment= lines,
// an EnvironmentFile with the admin token, its ExecStart — serves with the
// settings the unit means, and its KillSignal drains it to exit 0 well within
// TimeoutStopSec. The sandboxing options themselves need a running systemd:
// docs/deploy.md says so.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { REPO_ROOT, freePort, roomhostBin } from "../js/support/roomhost.js";
import { waitFor } from "../js/support/wait.js";

const UNIT = path.join(REPO_ROOT, "deploy", "roomhost.service");
const INSTALLED_BIN = "/usr/local/bin/roomhost";

/** The [Service] section's settings: key → list of values, in order. */
function serviceSettings(text) {
  const settings = new Map();
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const header = line.match(/^\[(.+)\]$/);
    if (header) { section = header[1]; continue; }
    if (section !== "Service") continue;
    const eq = line.indexOf("=");
    const key = line.slice(0, eq);
    settings.set(key, [...(settings.get(key) || []), line.slice(eq + 1)]);
  }
  return settings;
}

function systemdAnalyze() {
  const dirs = [...(process.env.PATH || "").split(":"), "/usr/bin", "/bin"];
  return dirs.map((d) => path.join(d, "systemd-analyze")).find((p) => fs.existsSync(p));
}

const analyze = systemdAnalyze();

test("systemd-analyze verify accepts the unit without a warning", {
  skip: analyze ? false : "systemd-analyze not installed (.ci/run installs it)",
}, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomhost-unit-"));
  try {
    // verify checks that ExecStart's binary exists: point it at the build.
    const unit = fs.readFileSync(UNIT, "utf8").split(INSTALLED_BIN).join(roomhostBin());
    const file = path.join(dir, "roomhost.service");
    fs.writeFileSync(file, unit);
    const result = spawnSync(analyze, ["verify", file], { encoding: "utf8", timeout: 60000 });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(`${result.stdout}${result.stderr}`.trim(), "", "no warnings");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("the binary started as the unit starts it serves the unit's settings and drains on its KillSignal", async () => {
  const settings = serviceSettings(fs.readFileSync(UNIT, "utf8"));
  const [execStart] = settings.get("ExecStart");
  const [bin, ...args] = execStart.split(/\s+/);
  assert.equal(bin, INSTALLED_BIN);
  const env = Object.fromEntries(settings.get("Environment").map((e) => {
    const eq = e.indexOf("=");
    return [e.slice(0, eq), e.slice(eq + 1)];
  }));
  // The unit's promises, stated once here so a change to them is deliberate.
  assert.equal(env.ROOMHOST_BIND, "127.0.0.1", "behind nginx: loopback only");
  assert.equal(env.ROOMHOST_TRUSTED_PROXIES, "127.0.0.1");
  assert.equal(env.ROOMHOST_DATA, `/var/lib/${settings.get("StateDirectory")[0]}`, "the data dir is the StateDirectory");
  assert.equal(settings.get("KillSignal")[0], "SIGTERM");
  const stopTimeoutS = Number(settings.get("TimeoutStopSec")[0].replace(/s$/, ""));

  // Only the paths and port change for the test: the data dir, the rooms
  // (this checkout's), and the port.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomhost-unit-run-"));
  const port = await freePort();
  const adminToken = "t".repeat(64);
  const envFile = path.join(dir, "env");
  fs.writeFileSync(envFile, `ROOMHOST_ADMIN_TOKEN=${adminToken}\n`, { mode: 0o600 });
  const fromFile = Object.fromEntries(fs.readFileSync(envFile, "utf8").trim().split("\n").map((l) => l.split("=")));
  const childEnv = {
    PATH: process.env.PATH,
    ...env,
    ROOMHOST_PORT: String(port),
    ROOMHOST_DATA: path.join(dir, "data"),
    ROOMHOST_ROOMS: path.join(REPO_ROOT, "rooms-js"),
    ...fromFile,
  };
  const child = spawn(roomhostBin(), args, { env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (c) => { log += c; });
  child.stderr.on("data", (c) => { log += c; });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  try {
    await waitFor(() => log.includes("serving"), { timeoutMs: 30000, what: `the start-up line\n${log}` });
    assert.match(log, new RegExp(`listening on http://127\\.0\\.0\\.1:${port}`));
    assert.match(log, /admin="bearer token, any address"/);
    assert.match(log, /trusted_proxies=\[127\.0\.0\.1\]/);
    const base = `http://127.0.0.1:${port}`;
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/api/rooms`)).status, 403, "the admin token is required");
    const rooms = await fetch(`${base}/api/rooms`, { headers: { Authorization: `Bearer ${adminToken}` } });
    assert.equal(rooms.status, 200);
    const posted = await fetch(`${base}/api/rooms/chat:unit/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ event: "new_msg", payload: { text: "kept" }, user: "ops" }),
    });
    assert.equal(posted.status, 200, await posted.text());
    const stopping = performance.now();
    child.kill(settings.get("KillSignal")[0]);
    let timer;
    const exit = await Promise.race([exited, new Promise((r) => { timer = setTimeout(() => r(null), stopTimeoutS * 1000); })]);
    clearTimeout(timer);
    const ms = performance.now() - stopping;
    assert.deepEqual(exit, { code: 0, signal: null }, log);
    assert.ok(ms < stopTimeoutS * 1000 / 10, `drained in ${ms.toFixed(0)} ms, a tenth of TimeoutStopSec at most`);
    console.log(`# unit settings: SIGTERM to exit 0 in ${ms.toFixed(0)} ms (TimeoutStopSec=${stopTimeoutS}s)`);
    // What it wrote is in the data dir, where StateDirectory puts it.
    assert.ok(fs.existsSync(path.join(dir, "data", "rooms", "chat", "unit")), "the room's files are in ROOMHOST_DATA");
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
