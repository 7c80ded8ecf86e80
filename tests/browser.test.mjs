// What a person sees, in a real browser (Debian's Chromium via playwright-core) against a
// real `wrangler dev`: live orders, payment status, chat, token refresh on 4401, and the
// hashed, immutable assets that make stale JavaScript impossible.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const artifacts = join(root, "test-artifacts");
const secret = randomBytes(32);
const publishSecret = randomBytes(16).toString("hex");
const ISSUER = "browser-test";
let gateway, base, browser, tokenServer, tokenUrl, tokenRequests = 0;

const b64 = (x) => Buffer.from(x).toString("base64url");
function mint(sub, channels, { publish = [], exp = 300, iatAgo = 0 } = {}) {
  const now = Math.floor(Date.now() / 1000) - iatAgo;
  const head = b64(JSON.stringify({ alg: "HS256", kid: "t" }));
  const body = b64(JSON.stringify({ sub, iss: ISSUER, aud: "foyer", iat: now, exp: now + exp, channels, publish, name: sub, role: "staff" }));
  return `${head}.${body}.${createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url")}`;
}

async function publish(channel, event, data) {
  const body = JSON.stringify({ id: `${event}-${Math.random()}`, channels: [channel], event, data });
  const t = Math.floor(Date.now() / 1000);
  const v1 = createHmac("sha256", publishSecret).update(`${t}./publish.${body}`).digest("hex");
  const r = await fetch(`${base}/publish`, { method: "POST", body, headers: { "Content-Type": "application/json", "X-Foyer-Signature": `t=${t},v1=${v1}` } });
  assert.equal(r.status, 200, await r.text());
}

const freePort = () => new Promise((ok) => { const s = createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); }); });

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), "foyer-browser-"));
  const jwks = JSON.stringify({ keys: [{ kty: "oct", alg: "HS256", kid: "t", k: b64(secret) }] });
  writeFileSync(join(dir, "env"), `JWT_KEYS='${jwks}'\nJWT_ISSUER='${ISSUER}'\nPUBLISH_SECRETS='${publishSecret}'\n`);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  gateway = spawn(join(root, "node_modules/.bin/wrangler"), ["dev", "--ip", "127.0.0.1", "--port", String(port),
    "--inspector-port", String(await freePort()), "--persist-to", join(dir, "state"), "--env-file", join(dir, "env"),
    "--show-interactive-dev-session=false"], { cwd: root, detached: true, stdio: "ignore", env: { ...process.env, WRANGLER_SEND_METRICS: "false" } });
  for (let i = 0; i < 600; i++) {
    try { if ((await fetch(`${base}/healthz`)).ok) break; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 500));
  }
  // The stand-in backend: hands out a fresh token for whatever the query asks.
  tokenServer = createServer((req, res) => {
    tokenRequests += 1;
    const q = new URL(req.url, "http://x").searchParams;
    res.writeHead(200, { "Access-Control-Allow-Origin": base, "Content-Type": "text/plain" });
    res.end(mint(q.get("sub"), [q.get("channel")], { publish: q.get("publish") ? [q.get("publish")] : [] }));
  }).listen(0, "127.0.0.1");
  await new Promise((r) => tokenServer.on("listening", r));
  tokenUrl = `http://127.0.0.1:${tokenServer.address().port}/token`;
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"] });
});

after(async () => {
  await browser?.close();
  tokenServer?.close();
  try { process.kill(-gateway.pid, "SIGTERM"); } catch { /* gone */ }
});

function page(path, channel, token, extra = {}) {
  const frag = new URLSearchParams({ channel, token, ...extra });
  return `${base}${path}#${frag}`;
}

async function open(url, width = 390) {
  const p = await browser.newPage({ viewport: { width, height: 780 } });
  await p.goto(url);
  return p;
}

test("a published order appears in the staff dashboard and updates in place", async () => {
  const venue = `v${Date.now()}`;
  const p = await open(page("/orders/", `orders:${venue}`, mint("staff-1", [`orders:${venue}`])), 1000);
  await p.waitForSelector('#status[data-state="open"]');
  await publish(`orders:${venue}`, "order.created", { order: "o-1", seat: "B12", items: ["tea", "cake"], status: "created" });
  await p.waitForSelector("#order-o-1");
  assert.match(await p.textContent("#order-o-1"), /B12.*tea, cake.*created/s);
  await publish(`orders:${venue}`, "order.paid", { order: "o-1", status: "paid" });
  await p.waitForFunction(() => document.querySelector("#order-o-1 .badge").textContent === "paid");
  await p.screenshot({ path: join(artifacts, "orders.png") });
  await p.close();
});

test("the payment page shows a status paid before it opened", async () => {
  const order = `o${Date.now()}`;
  await publish(`payment:${order}`, "payment.pending", { order, status: "pending" });
  await publish(`payment:${order}`, "payment.paid", { order, status: "paid" });
  const p = await open(page("/payment/", `payment:${order}`, mint("cust-1", [`payment:${order}`])));
  await p.waitForSelector('#payment[data-status="paid"]');
  assert.match(await p.textContent("#payment"), /Paid/);
  await p.screenshot({ path: join(artifacts, "payment.png") });
  await p.close();
});

test("a 4401 makes the page fetch a new token and reconnect", async () => {
  const venue = `r${Date.now()}`;
  const expired = mint("staff-2", [`orders:${venue}`], { exp: 60, iatAgo: 400 });
  const before = tokenRequests;
  const url = page("/orders/", `orders:${venue}`, expired, { token_url: `${tokenUrl}?sub=staff-2&channel=orders:${venue}` });
  const p = await open(url, 1000);
  await p.waitForSelector('#status[data-state="open"]', { timeout: 20000 });
  assert.ok(tokenRequests > before, "the page asked its backend for a token");
  await publish(`orders:${venue}`, "order.created", { order: "o-9", seat: "C3", items: ["water"], status: "created" });
  await p.waitForSelector("#order-o-9");
  await p.close();
});

test("two people chat, with presence and server-stamped authors", async () => {
  const room = `c${Date.now()}`;
  const ch = `chat:${room}`;
  const ann = await open(page("/chat/", ch, mint("ann", [ch], { publish: [ch] })));
  await ann.waitForSelector('#status[data-state="open"]');
  const sam = await open(page("/chat/", ch, mint("sam", [ch], { publish: [ch] })));
  await sam.waitForSelector('#status[data-state="open"]');
  await ann.waitForFunction(() => document.getElementById("online").textContent.includes("2 online"));
  await ann.fill("#text", "Two teas to B12, please");
  await ann.click("button[type=submit]");
  await sam.waitForFunction(() => document.getElementById("log").textContent.includes("ann (staff): Two teas to B12, please"));
  await ann.screenshot({ path: join(artifacts, "chat.png") });
  await ann.close();
  await sam.close();
});

function walk(dir) {
  return readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? walk(join(dir, n)) : [join(dir, n)]));
}

test("every asset in the built pages is content-hashed and served immutable; pages are no-cache", async () => {
  const pages = walk(join(root, "dist/static")).filter((f) => f.endsWith(".html"));
  assert.ok(pages.length >= 4);
  const urls = new Set(pages.flatMap((f) => [...readFileSync(f, "utf8").matchAll(/(?:href|src)="(\/assets\/[^"]+)"/g)].map((m) => m[1])));
  assert.ok(urls.size >= 3);
  for (const u of urls) {
    assert.match(u, /\.[0-9a-f]{8,}\.[a-z]+$/, u);
    const r = await fetch(base + u);
    assert.equal(r.status, 200, u);
    assert.equal(r.headers.get("cache-control"), "public, max-age=31536000, immutable", u);
  }
  for (const path of ["/", "/orders/", "/payment/", "/chat/"]) {
    const r = await fetch(base + path);
    assert.equal(r.status, 200, path);
    assert.equal(r.headers.get("cache-control"), "no-cache", path);
  }
});

test("one changed byte changes a script's URL; unchanged assets keep theirs", () => {
  const dir = mkdtempSync(join(tmpdir(), "foyer-assets-"));
  for (const p of ["static", "src", "scripts/build-assets.mjs", "Cargo.toml", "Cargo.lock"]) cpSync(join(root, p), join(dir, p), { recursive: true });
  const build = () => { execFileSync("node", [join(dir, "scripts/build-assets.mjs")], { stdio: "ignore" }); return JSON.parse(readFileSync(join(dir, "dist/manifest.json"), "utf8")); };
  const first = build();
  assert.deepEqual(build(), first, "builds are reproducible");
  writeFileSync(join(dir, "static/assets/page.js"), readFileSync(join(dir, "static/assets/page.js"), "utf8") + " ");
  const second = build();
  assert.notEqual(second["/assets/page.js"], first["/assets/page.js"]);
  assert.notEqual(second["/assets/orders.js"], first["/assets/orders.js"], "its importers change too");
  assert.equal(second["/assets/foyer.css"], first["/assets/foyer.css"]);
  assert.equal(second["/assets/foyer.js"], first["/assets/foyer.js"]);
});

test("no static file carries a token, key or secret", () => {
  for (const f of [...walk(join(root, "static")), ...walk(join(root, "dist/static"))]) {
    const text = readFileSync(f, "utf8");
    assert.doesNotMatch(text, /eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/, `${f}: JWT`);
    assert.doesNotMatch(text, /[?&](key|api_key|apikey)=/i, `${f}: key in a URL`);
    assert.doesNotMatch(text, /PRIVATE KEY|PUBLISH_SECRETS|JWT_KEYS/, `${f}: secret material`);
    assert.ok(!text.includes(publishSecret) && !text.includes(b64(secret)), `${f}: this run's secrets`);
  }
});
