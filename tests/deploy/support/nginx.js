// The real nginx with the committed deploy/nginx/roomhost.conf, for the
// deploy tests: a self-signed certificate made with openssl, the config
// rendered with only the listen ports, certificate paths and upstream port
// substituted (each substitution must match, so the file and this test cannot
// drift apart), and nginx run in the foreground as the current user with
// every path (pid, logs, temp files) in a temp dir. Every wait is bounded.

import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { REPO_ROOT, freePort } from "../../js/support/roomhost.js";
import { sleep } from "../../js/support/wait.js";

export const CONFIG_FILE = path.join(REPO_ROOT, "deploy", "nginx", "roomhost.conf");
const START_TIMEOUT_MS = 10000;
const STOP_TIMEOUT_MS = 5000;

/** The nginx binary: $NGINX, else `nginx` on PATH or in /usr/sbin. */
function nginxBin() {
  if (process.env.NGINX) return process.env.NGINX;
  const dirs = [...(process.env.PATH || "").split(":"), "/usr/sbin", "/sbin"];
  const found = dirs.map((d) => path.join(d, "nginx")).find((p) => fs.existsSync(p));
  if (!found) throw new Error("nginx not found: install it (apt-get install nginx) or set NGINX");
  return found;
}

/** A self-signed certificate for 127.0.0.1 in `dir`: { cert, key } paths. */
export function makeCertificate(dir) {
  const cert = path.join(dir, "cert.pem");
  const key = path.join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
    "-keyout", key, "-out", cert,
    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
  ], { stdio: ["ignore", "ignore", "pipe"], timeout: 30000 });
  return { cert, key };
}

/** Replaces `from` with `to`, exactly `count` times, or throws. */
function substitute(text, from, to, count) {
  const found = text.split(from).length - 1;
  if (found !== count) {
    throw new Error(`${CONFIG_FILE}: expected ${count} × ${JSON.stringify(from)}, found ${found}: update tests/deploy/support/nginx.js with the file`);
  }
  return text.split(from).join(to);
}

/**
 * deploy/nginx/roomhost.conf for a test: IPv4 loopback on the given ports
 * (the IPv6 listens dropped), the test's certificate, roomhost's port.
 */
export function renderConfig({ httpPort, httpsPort, upstreamPort, cert, key }) {
  let text = fs.readFileSync(CONFIG_FILE, "utf8");
  text = substitute(text, "    listen [::]:80;\n", "", 1);
  text = substitute(text, "    listen [::]:443 ssl;\n", "", 1);
  text = substitute(text, "listen 80;", `listen 127.0.0.1:${httpPort};`, 1);
  text = substitute(text, "listen 443 ssl;", `listen 127.0.0.1:${httpsPort} ssl;`, 1);
  text = substitute(text, "server 127.0.0.1:4000;", `server 127.0.0.1:${upstreamPort};`, 1);
  text = substitute(text, "/etc/letsencrypt/live/chat.example.com/fullchain.pem", cert, 1);
  text = substitute(text, "/etc/letsencrypt/live/chat.example.com/privkey.pem", key, 1);
  return text;
}

/** The main nginx.conf around the site file: every path inside `dir`. */
function mainConfig(dir, siteFile) {
  const p = (name) => path.join(dir, name);
  // As root nginx would run its workers as "nobody", who cannot enter the
  // temp dir; as anyone else the directive is ignored (with a warning).
  const user = process.getuid?.() === 0 ? "user root;\n" : "";
  return `${user}daemon off;
worker_processes 1;
pid ${p("nginx.pid")};
error_log ${p("error.log")} info;
events { worker_connections 512; }
http {
    access_log ${p("access.log")};
    client_body_temp_path ${p("client_body")};
    proxy_temp_path ${p("proxy")};
    fastcgi_temp_path ${p("fastcgi")};
    uwsgi_temp_path ${p("uwsgi")};
    scgi_temp_path ${p("scgi")};
    include ${siteFile};
}
`;
}

async function waitForPort(port, exited, log) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const exit = await Promise.race([exited, sleep(0).then(() => null)]);
    if (exit) throw new Error(`nginx exited (code ${exit.code}, signal ${exit.signal})\n${log()}`);
    const open = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => { socket.destroy(); resolve(true); });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`nginx did not listen on ${port} within ${START_TIMEOUT_MS} ms\n${log()}`);
    await sleep(50);
  }
}

/**
 * Starts nginx in front of roomhost on `upstreamPort`. Resolves to
 * { httpsPort, httpPort, origin, ca, accessLog(), errorLog(), stop() }.
 */
export async function startNginx({ upstreamPort }) {
  const bin = nginxBin();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomhost-nginx-"));
  const { cert, key } = makeCertificate(dir);
  const httpPort = await freePort();
  const httpsPort = await freePort();
  const site = path.join(dir, "roomhost.conf");
  fs.writeFileSync(site, renderConfig({ httpPort, httpsPort, upstreamPort, cert, key }));
  const conf = path.join(dir, "nginx.conf");
  fs.writeFileSync(conf, mainConfig(dir, site));
  const read = (name) => () => {
    try { return fs.readFileSync(path.join(dir, name), "utf8"); } catch { return ""; }
  };
  const errorLog = read("error.log");
  // -t first: a config error is reported as such, not as a port that never opens.
  execFileSync(bin, ["-t", "-q", "-p", dir, "-c", conf, "-e", path.join(dir, "error.log")], {
    stdio: ["ignore", "ignore", "pipe"], timeout: 10000,
  });
  const child = spawn(bin, ["-p", dir, "-c", conf, "-e", path.join(dir, "error.log")], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk) => { stderr += chunk; });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  process.on("exit", () => child.kill("SIGKILL"));
  try {
    await waitForPort(httpsPort, exited, () => stderr + errorLog());
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return {
    httpPort,
    httpsPort,
    origin: `https://127.0.0.1:${httpsPort}`,
    caFile: cert,
    ca: fs.readFileSync(cert),
    accessLog: read("access.log"),
    errorLog,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const done = await Promise.race([exited, sleep(STOP_TIMEOUT_MS).then(() => null)]);
        if (!done) child.kill("SIGKILL");
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
