// Shared by the browser suites: a real `wrangler dev` gateway with fresh secrets, token
// minting and signed publishing, a stand-in token backend, and Debian's Chromium.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const b64 = (x) => Buffer.from(x).toString("base64url");
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const freePort = () => new Promise((ok) => {
  const s = createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); });
});

/** Starts `wrangler dev` on `port` with a fresh HS256 key and publish secret, plus `vars`. */
export async function startGateway({ port, vars = {} } = {}) {
  const secret = randomBytes(32);
  const publishSecret = randomBytes(16).toString("hex");
  const issuer = "browser-test";
  const dir = mkdtempSync(join(tmpdir(), "foyer-browser-"));
  const jwks = JSON.stringify({ keys: [{ kty: "oct", alg: "HS256", kid: "t", k: b64(secret) }] });
  const env = { JWT_KEYS: jwks, JWT_ISSUER: issuer, PUBLISH_SECRETS: publishSecret, ...vars };
  writeFileSync(join(dir, "env"), Object.entries(env).map(([k, v]) => `${k}='${v}'\n`).join(""));
  port ??= await freePort();
  const base = `http://127.0.0.1:${port}`;
  // scripts/gateway: wrangler dev with the project's Node in a process group of its own; it
  // prints `ready URL` once /healthz answers and goes down if this process does.
  const child = spawn(join(root, "scripts/gateway"), ["--port", String(port), "--vars", join(dir, "env"),
    "--persist", join(dir, "state"), "--log", join(dir, "wrangler.log"), "--watch", String(process.pid)],
  { cwd: root, detached: true, stdio: ["ignore", "pipe", "inherit"] });
  const ready = await new Promise((ok) => {
    let out = "";
    child.stdout.on("data", (d) => { out += d; if (out.includes("\n")) ok(out.startsWith("ready ")); });
    child.on("exit", () => ok(false));
  });
  child.stdout.destroy();
  child.unref();
  assert.ok(ready, `the gateway came up (log: ${join(dir, "wrangler.log")})`);

  function mint(sub, channels, { publish = [], exp = 300, iatAgo = 0, key = secret } = {}) {
    const now = Math.floor(Date.now() / 1000) - iatAgo;
    const head = b64(JSON.stringify({ alg: "HS256", kid: "t" }));
    const body = b64(JSON.stringify({ sub, iss: issuer, aud: "foyer", iat: now, exp: now + exp, channels, publish, name: sub, role: "staff" }));
    return `${head}.${body}.${createHmac("sha256", key).update(`${head}.${body}`).digest("base64url")}`;
  }
  /** A well-formed token signed with another key: the gateway closes 4401. */
  const forged = (sub, channels) => mint(sub, channels, { key: randomBytes(32) });

  /** A signed POST (`/publish`, `/links`, `/revoke`); answers the JSON of a 200. */
  async function post(path, value) {
    const body = JSON.stringify(value);
    const t = Math.floor(Date.now() / 1000);
    const v1 = createHmac("sha256", publishSecret).update(`${t}.${path}.${body}`).digest("hex");
    const r = await fetch(`${base}${path}`, { method: "POST", body, headers: { "Content-Type": "application/json", "X-Foyer-Signature": `t=${t},v1=${v1}` } });
    const text = await r.text();
    assert.equal(r.status, 200, text);
    return JSON.parse(text);
  }

  async function publish(channel, event, data) {
    return (await post("/publish", { id: `${event}-${Math.random()}`, channels: [channel], event, data })).results[0];
  }

  const stop = () => { try { process.kill(-child.pid, "SIGTERM"); } catch { /* gone */ } };
  return { base, port, mint, forged, publish, post, stop, secrets: [publishSecret, b64(secret)] };
}

/**
 * The stand-in backend: GET /token?sub=&channel=&publish=&tag= mints a token; `modes[tag]`
 * switches a tag's answers ("good", "forged", "login": a redirect to an HTML login page,
 * "html": a 200 HTML page). Every request is logged with its time in `hits`.
 */
export async function startTokenServer(gateway) {
  const hits = [];
  const modes = {};
  const server = createServer((req, res) => {
    const u = new URL(req.url, "http://x");
    const q = u.searchParams;
    const tag = q.get("tag") ?? "";
    hits.push({ tag, path: u.pathname, t: Date.now() });
    const cors = { "Access-Control-Allow-Origin": "*", "Cache-Control": "no-store" };
    if (u.pathname === "/login") {
      res.writeHead(200, { ...cors, "Content-Type": "text/html" });
      return res.end("<!doctype html><title>Log in</title><form>…</form>");
    }
    const mode = modes[tag] ?? "good";
    if (mode === "login") {
      res.writeHead(302, { ...cors, Location: "/login?next=/token" });
      return res.end();
    }
    if (mode === "html") {
      res.writeHead(200, { ...cors, "Content-Type": "text/html" });
      return res.end("<!doctype html><title>Log in</title>");
    }
    const channels = [q.get("channel")];
    const publish = q.get("publish") ? [q.get("publish")] : [];
    res.writeHead(200, { ...cors, "Content-Type": "text/plain" });
    res.end(mode === "forged" ? gateway.forged(q.get("sub"), channels) : gateway.mint(q.get("sub"), channels, { publish }));
  }).listen(0, "127.0.0.1");
  await new Promise((r) => server.on("listening", r));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const url = (params) => `${origin}/token?${new URLSearchParams(params)}`;
  const times = (tag) => hits.filter((h) => h.tag === tag && h.path === "/token").map((h) => h.t);
  return { origin, url, hits, modes, times, close: () => server.close() };
}

export function launchBrowser() {
  return chromium.launch({ executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"] });
}

/** Consecutive differences of a list of times. */
export const gaps = (ts) => ts.slice(1).map((t, i) => t - ts[i]);
