// A cluster on loopback for the node suites, as tests/common/cluster.rs
// makes one for Rust: 3 clustered NATS JetStream servers (the pinned
// binary, installed by scripts/nats-server.sh on first use) and roomhost
// nodes over them. stop() kills everything and removes its files.

import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { REPO_ROOT, freePort, startRoomhost } from "./roomhost.js";
import { sleep } from "./wait.js";

/** Resolves once 127.0.0.1:`port` accepts connections (within `timeoutMs`). */
async function portOpen(port, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await new Promise((resolve) => {
      const probe = net.connect(port, "127.0.0.1");
      probe.once("connect", () => { probe.destroy(); resolve(true); });
      probe.once("error", () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`port ${port} did not open`);
    await sleep(50);
  }
}

/**
 * Starts 3 NATS servers and `nodes` roomhost nodes (`n1`…) with a lease of
 * `lease` seconds. Resolves to { nodes: [server of startRoomhost], stop() }.
 */
export async function startCluster({ nodes = 3, lease = 2, roomsDir } = {}) {
  const bin = execFileSync("bash", [path.join(REPO_ROOT, "scripts/nats-server.sh")], {
    stdio: ["ignore", "pipe", "inherit"],
  }).toString().trim();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomhost-nats-"));
  const clients = [], routes = [];
  for (let i = 0; i < 3; i++) {
    clients.push(await freePort());
    routes.push(await freePort());
  }
  const routeList = routes.map((p) => `nats-route://127.0.0.1:${p}`).join(", ");
  const servers = [];
  for (let i = 0; i < 3; i++) {
    const conf = path.join(dir, `nats${i}.conf`);
    fs.writeFileSync(conf, [
      `server_name: t${i}`,
      `listen: 127.0.0.1:${clients[i]}`,
      "max_payload: 9437184",
      `jetstream { store_dir: "${path.join(dir, `js${i}`)}", sync_interval: always }`,
      `cluster { name: rhjs, listen: 127.0.0.1:${routes[i]}, routes: [${routeList}] }`,
    ].join("\n"));
    servers.push(spawn(bin, ["-c", conf], { stdio: "ignore" }));
  }
  const started = [];
  const stop = async () => {
    await Promise.all(started.map((node) => node.kill()));
    for (const server of servers) server.kill("SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await Promise.all(clients.map((port) => portOpen(port)));
    const urls = clients.map((p) => `nats://127.0.0.1:${p}`).join(",");
    for (let i = 1; i <= nodes; i++) {
      started.push(await startRoomhost({
        roomsDir,
        args: ["--cluster", urls, "--node", `n${i}`, "--lease", String(lease), "--cluster-replicas", "3"],
      }));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { nodes: started, stop };
}
