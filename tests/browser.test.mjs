// What a person sees, in a real browser (Debian's Chromium via playwright-core) against a
// real `wrangler dev`: live orders, payment status, chat with presence, token refresh on
// 4401, pages that trust nothing from their URL, and the hashed, immutable assets that make
// stale JavaScript impossible.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchBrowser, root, sleep, startGateway, startTokenServer } from "./support/foyer.mjs";

const artifacts = join(root, "test-artifacts");
let gw, base, browser, tokens, mint, publish, post;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  gw = await startGateway();
  ({ base, mint, publish, post } = gw);
  tokens = await startTokenServer(gw); // the stand-in backend, on another loopback port
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  tokens?.close();
  gw?.stop();
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
  const url = page("/orders/", `orders:${venue}`, expired, { token_url: tokens.url({ sub: "staff-2", channel: `orders:${venue}`, tag: venue }) });
  const p = await open(url, 1000);
  await p.waitForSelector('#status[data-state="open"]', { timeout: 20000 });
  assert.equal(tokens.times(venue).length, 1, "the page asked its backend for one token");
  await publish(`orders:${venue}`, "order.created", { order: "o-9", seat: "C3", items: ["water"], status: "created" });
  await p.waitForSelector("#order-o-9");
  await p.close();
});

test("the token leaves the address bar and the history at once", async () => {
  const venue = `f${Date.now()}`;
  const token = mint("staff-3", [`orders:${venue}`]);
  const p = await open(page("/orders/", `orders:${venue}`, token), 1000);
  await p.waitForSelector('#status[data-state="open"]');
  assert.ok(!p.url().includes(token) && !p.url().includes("token="), p.url());
  assert.equal(await p.evaluate(() => new URLSearchParams(location.hash.slice(1)).get("channel")), `orders:${venue}`, "the rest of the link stays");
  await p.goto(`${base}/`);
  await p.goBack();
  assert.ok(!p.url().includes("token="), `history entry: ${p.url()}`);
  await p.close();
});

test("a link whose token_url names a foreign origin is refused before any request", async () => {
  const venue = `x${Date.now()}`;
  const p = await browser.newPage();
  const requests = [], sockets = [];
  p.on("request", (r) => requests.push(r.url()));
  p.on("websocket", (w) => sockets.push(w.url()));
  const token = mint("staff-4", [`orders:${venue}`]);
  await p.goto(page("/orders/", `orders:${venue}`, token, { token_url: "https://tokens.attacker.example/t" }));
  await p.waitForSelector('#status[data-state="failed"]');
  assert.match(await p.textContent("#status"), /token_url \(https:\/\/tokens\.attacker\.example\) is not an allowed origin/);
  await sleep(500);
  assert.deepEqual(requests.filter((u) => !u.startsWith(base)), [], "nothing was asked of the foreign origin");
  assert.deepEqual(sockets, [], "no socket with the link's token either");
  assert.ok(!p.url().includes("token="), "and the token is gone from the address bar");
  await p.close();
});

test("a token endpoint that answers with a login page shows an error instead of looping", async () => {
  for (const mode of ["login", "html"]) {
    const venue = `l${mode}${Date.now()}`;
    tokens.modes[venue] = mode;
    // No token in the link: the page must ask token_url first.
    const url = `${base}/orders/#${new URLSearchParams({ channel: `orders:${venue}`, token_url: tokens.url({ sub: "staff-5", channel: `orders:${venue}`, tag: venue }) })}`;
    const p = await open(url);
    await p.waitForSelector('#status[data-state="failed"]');
    assert.match(await p.textContent("#status"), mode === "login" ? /redirected/ : /not a token/);
    await sleep(1500);
    assert.equal(tokens.times(venue).length, 1, `${mode}: asked once, no loop`);
    assert.equal(tokens.hits.filter((h) => h.path === "/login").length, 0, "the redirect was not followed");
    await p.close();
  }
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
  await sam.close();
  await ann.waitForFunction(() => document.getElementById("online").textContent.includes("1 online"));
  await ann.close();
});

test("the staff inbox shows a customer's message beside the orders, and the reply reaches the customer's chat", async () => {
  const venue = `v${Date.now()}`, room = `o${Date.now()}`;
  const inbox = `inbox:${venue}`, ch = `chat:${room}`;
  await post("/links", { links: [{ channel: ch, inbox }, { channel: `orders:${venue}`, inbox }] });
  const staff = await open(page("/inbox/", inbox, mint("sam", [inbox], { publish: [ch] })), 1200);
  await staff.waitForSelector('#status[data-state="open"]');
  const ann = await open(page("/chat/", ch, mint("ann", [ch], { publish: [ch] })));
  await ann.waitForSelector('#status[data-state="open"]');
  await publish(`orders:${venue}`, "order.created", { order: room, seat: "B12", items: ["tea"], status: "created" });
  await staff.waitForSelector(`#order-${room}`);
  await ann.fill("#text", "Could we get two more teas?");
  await ann.click("button[type=submit]");
  const conversation = `button[data-chat="${ch}"]`;
  await staff.waitForSelector(conversation);
  assert.equal(await staff.getAttribute(conversation, "data-unread"), "1");
  assert.match(await staff.textContent(conversation), /two more teas/);
  await staff.click(conversation);
  await staff.waitForFunction(() => document.getElementById("log").textContent.includes("Could we get two more teas?"));
  await staff.fill("#text", "On their way to B12");
  await staff.click("#form button[type=submit]");
  await ann.waitForFunction(() => document.getElementById("log").textContent.includes("sam (staff): On their way to B12"));
  await staff.waitForFunction(() => document.getElementById("log").textContent.includes("On their way to B12"), null, { timeout: 10_000 });
  await staff.screenshot({ path: join(artifacts, "inbox.png") });
  await staff.close();
  await ann.close();
});

test("the chat page lists who is there from the welcome (v1.1), then follows joins and leaves", async () => {
  const ch = `chat:p${Date.now()}`;
  const ann = await open(page("/chat/", ch, mint("ann", [ch], { publish: [ch] })));
  await ann.waitForSelector('#status[data-state="open"]');
  const sam = await open(page("/chat/", ch, mint("sam", [ch], { publish: [ch] })));
  await sam.waitForSelector('#status[data-state="open"]');
  const who = (p) => p.$$eval("#people li", (lis) => lis.map((li) => li.dataset.sub));
  // Only sam's welcome can tell him that ann was already there.
  await sam.waitForSelector('#people li[data-sub="ann"]', { timeout: 5000 });
  assert.deepEqual(await who(sam), ["ann", "sam"]);
  assert.match(await sam.textContent("#online"), /2 online/);
  await ann.waitForSelector('#people li[data-sub="sam"]', { timeout: 5000 });
  await sam.close();
  await ann.waitForFunction(() => !document.querySelector('#people li[data-sub="sam"]'));
  assert.deepEqual(await who(ann), ["ann"]);
  await ann.screenshot({ path: join(artifacts, "chat-presence.png") });
  await ann.close();
});

test("the landing page's client library link serves the current client", async () => {
  const html = await (await fetch(`${base}/`)).text();
  const href = /href="([^"]+)">client library</.exec(html)?.[1];
  assert.equal(href, "/client/foyer.js");
  const r = await fetch(base + href);
  assert.equal(r.status, 200);
  assert.match(r.url, /\/assets\/foyer\.[0-9a-f]{10}\.js$/);
  assert.match(await r.text(), /export function connect/);
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
  for (const path of ["/", "/orders/", "/payment/", "/chat/", "/inbox/"]) {
    const r = await fetch(base + path);
    assert.equal(r.status, 200, path);
    assert.equal(r.headers.get("cache-control"), "no-cache", path);
  }
});

test("one changed byte changes a script's URL; unchanged assets keep theirs", () => {
  const dir = mkdtempSync(join(tmpdir(), "foyer-assets-"));
  for (const p of ["static", "client", "src", "scripts/build-assets.mjs", "Cargo.toml", "Cargo.lock"]) cpSync(join(root, p), join(dir, p), { recursive: true });
  const build = () => { execFileSync("node", [join(dir, "scripts/build-assets.mjs")], { stdio: "ignore" }); return JSON.parse(readFileSync(join(dir, "dist/manifest.json"), "utf8")); };
  const first = build();
  assert.deepEqual(build(), first, "builds are reproducible");
  writeFileSync(join(dir, "static/assets/page.js"), readFileSync(join(dir, "static/assets/page.js"), "utf8") + " ");
  const second = build();
  assert.notEqual(second["/assets/page.js"], first["/assets/page.js"]);
  assert.notEqual(second["/assets/orders.js"], first["/assets/orders.js"], "its importers change too");
  assert.equal(second["/assets/foyer.css"], first["/assets/foyer.css"]);
  assert.equal(second["/assets/foyer.js"], first["/assets/foyer.js"]);
  // The client's one source is client/foyer.js; the stable URL follows it.
  writeFileSync(join(dir, "client/foyer.js"), readFileSync(join(dir, "client/foyer.js"), "utf8") + " ");
  const third = build();
  assert.notEqual(third["/assets/foyer.js"], second["/assets/foyer.js"]);
  assert.notEqual(third["/assets/page.js"], second["/assets/page.js"], "the pages that import it change too");
  assert.equal(readFileSync(join(dir, "dist/static/_redirects"), "utf8"), `/client/foyer.js ${third["/assets/foyer.js"]} 302\n`);
});

test("no static file carries a token, key or secret", () => {
  for (const f of [...walk(join(root, "static")), ...walk(join(root, "client")), ...walk(join(root, "dist/static"))]) {
    const text = readFileSync(f, "utf8");
    assert.doesNotMatch(text, /eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/, `${f}: JWT`);
    assert.doesNotMatch(text, /[?&](key|api_key|apikey)=/i, `${f}: key in a URL`);
    assert.doesNotMatch(text, /PRIVATE KEY|PUBLISH_SECRETS|JWT_KEYS/, `${f}: secret material`);
    assert.ok(gw.secrets.every((x) => !text.includes(x)), `${f}: this run's secrets`);
  }
});
