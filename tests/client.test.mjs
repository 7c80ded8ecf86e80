// The browser client (client/foyer.js) on a bad network, in a real browser (Debian's
// Chromium via playwright-core) against a real `wrangler dev`: half-open sockets, offline and
// back, backoff under repeated refusals, and loading from another origin. Bounds are set
// small through the client's options, so the suite stays short. Plus the package: its
// backoff law, its types and that the gateway serves the very same file.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { createServer } from "node:http";
import net from "node:net";
import { join } from "node:path";
import { backoffDelay } from "../client/foyer.js";
import { freePort, gaps, launchBrowser, root, sleep, startGateway, startTokenServer } from "./support/foyer.mjs";

let gw, tokens, browser, proxy, otherOrigin, otherServer, strangerOrigin, strangerServer;

// A TCP proxy in front of the gateway that can make its open connections half-open (freeze:
// nothing passes in either direction, nothing is closed, exactly a phone that changed
// networks) or cut every new connection shortly after it opened.
function startProxy(targetPort) {
  const pairs = new Set();
  const state = { killAfterMs: null };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = { client, upstream };
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => { pairs.delete(pair); client.destroy(); upstream.destroy(); };
    for (const s of [client, upstream]) { s.on("error", end); s.on("close", end); }
    if (state.killAfterMs !== null) setTimeout(end, state.killAfterMs);
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok({
    port: server.address().port,
    state,
    open: () => pairs.size,
    freeze() {
      for (const { client, upstream } of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
      const frozen = [...pairs];
      pairs.clear();
      return () => frozen.forEach(({ client, upstream }) => { client.destroy(); upstream.destroy(); });
    },
    close: () => { for (const { client, upstream } of pairs) { client.destroy(); upstream.destroy(); } server.close(); },
  })));
}

// A page on another origin (the Django site): loads the client from the gateway's stable URL.
const APP = `<!doctype html><meta charset="utf-8"><title>Another origin</title><p id="state">loading</p>
<script type="module">
const p = new URLSearchParams(location.hash.slice(1));
window.__events = [];
const { connect, VERSION } = await import(p.get("client"));
window.__version = VERSION;
connect({
  channel: p.get("channel"),
  getToken: async () => (await fetch(p.get("token_url"))).text(),
  minBackoffMs: 5000,
  onState: (s, reason) => { document.getElementById("state").textContent = s; document.getElementById("state").dataset.reason = reason; },
  onEvent: (e) => window.__events.push(e.seq),
});
</script>`;
const serveApp = () => createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "text/html", "Cache-Control": "no-store" });
  res.end(APP);
}).listen(0, "127.0.0.1");

before(async () => {
  const port = await freePort();
  proxy = await startProxy(port);
  otherServer = serveApp();
  strangerServer = serveApp();
  await Promise.all([otherServer, strangerServer].map((s) => new Promise((r) => s.on("listening", r))));
  otherOrigin = `http://127.0.0.1:${otherServer.address().port}`;
  strangerOrigin = `http://127.0.0.1:${strangerServer.address().port}`;
  gw = await startGateway({ port, vars: {
    // The gateway's own origin as seen through the proxy, and the other page's; not the stranger's.
    ALLOWED_ORIGINS: [`http://127.0.0.1:${port}`, `http://127.0.0.1:${proxy.port}`, otherOrigin].join(","),
    MAX_SOCKETS_PER_USER: "2",
  } });
  tokens = await startTokenServer(gw);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  tokens?.close();
  proxy?.close();
  otherServer?.close();
  strangerServer?.close();
  gw?.stop();
});

let n = 0;
const unique = (p) => `${p}${Date.now().toString(36)}${(n += 1)}`;

// Opens the gateway's landing page in a fresh context and starts a client there, imported
// from the stable URL; states and event seqs are logged in window.__log. A failure is
// reported as "reconnecting" with its wait (retryInMs), the attempt after it with null.
async function clientPage({ channel, sub, tag, via = null, options = {}, fixedRandom = null }) {
  const context = await browser.newContext();
  const p = await context.newPage();
  await p.goto(`${gw.base}/`);
  const cfg = { channel, options, fixedRandom, url: via ? `ws://127.0.0.1:${via}` : undefined,
    tokenUrl: tokens.url({ sub, channel, tag }) };
  await p.evaluate(async (cfg) => {
    const { connect } = await import("/client/foyer.js");
    const log = (window.__log = { states: [], events: [] });
    window.__client = connect({
      ...cfg.options,
      channel: cfg.channel,
      ...(cfg.url ? { url: cfg.url } : {}),
      ...(cfg.fixedRandom !== null ? { random: () => cfg.fixedRandom } : {}),
      getToken: async () => (await fetch(cfg.tokenUrl)).text(),
      onState: (state, reason, d) => log.states.push({ state, reason, code: d.code, attempt: d.attempt, retryInMs: d.retryInMs, t: Date.now() }),
      onEvent: (e) => log.events.push(e.seq),
    });
  }, cfg);
  const log = () => p.evaluate(() => window.__log);
  const states = async () => (await log()).states;
  const events = async () => (await log()).events;
  const waitFor = (fn, arg, timeout = 15000) => p.waitForFunction(fn, arg, { timeout, polling: 50 });
  const waitState = (state, after = 0, timeout) =>
    waitFor(([s, a]) => window.__log.states.some((x) => x.state === s && x.t >= a), [state, after], timeout).then(async () =>
      (await states()).find((x) => x.state === state && x.t >= after));
  const waitEvents = (count, timeout) => waitFor((c) => window.__log.events.length >= c, count, timeout).then(events);
  return { p, context, log, states, events, waitState, waitEvents, close: () => context.close() };
}

// ---- the package: pure parts, no browser -------------------------------------------------

test("backoff is full jitter under a bound that doubles per failure and is capped", () => {
  const opts = { minBackoffMs: 500, maxBackoffMs: 30_000 };
  assert.equal(backoffDelay(0, opts), 0);
  for (const [attempt, bound] of [[1, 500], [2, 1000], [3, 2000], [6, 16_000], [7, 30_000], [50, 30_000]]) {
    assert.equal(backoffDelay(attempt, { ...opts, random: () => 0.999999 }) > bound * 0.999, true, `attempt ${attempt} reaches ${bound}`);
    const samples = Array.from({ length: 4000 }, () => backoffDelay(attempt, opts));
    assert.ok(samples.every((d) => d >= 0 && d < bound), `attempt ${attempt} stays under ${bound}`);
    const mean = samples.reduce((a, b) => a + b) / samples.length;
    assert.ok(Math.abs(mean - bound / 2) < bound * 0.05, `attempt ${attempt}: uniform (mean ${mean})`);
  }
});

test("the package's types declare exactly what the module exports", async () => {
  const mod = await import("../client/foyer.js");
  const dts = readFileSync(join(root, "client/foyer.d.ts"), "utf8");
  const declared = [...dts.matchAll(/^export declare (?:function|const|class) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(mod).sort());
  const pkg = JSON.parse(readFileSync(join(root, "client/package.json"), "utf8"));
  assert.equal(pkg.type, "module");
  assert.equal(pkg.version, mod.VERSION);
  assert.equal(pkg.exports["."].types, "./foyer.d.ts");
  assert.equal(pkg.exports["."].default, "./foyer.js");
  for (const f of pkg.files) readFileSync(join(root, "client", f)); // every listed file exists
});

test("the gateway serves the package's module byte for byte, and /client/foyer.js redirects to it briefly", async () => {
  const source = readFileSync(join(root, "client/foyer.js"));
  const hashed = readdirSync(join(root, "dist/static/assets")).filter((f) => /^foyer\.[0-9a-f]{10}\.js$/.test(f));
  assert.equal(hashed.length, 1);
  const served = await fetch(`${gw.base}/assets/${hashed[0]}`);
  assert.equal(served.status, 200);
  assert.ok(Buffer.from(await served.arrayBuffer()).equals(source), "no second copy that could drift");
  assert.equal(served.headers.get("cache-control"), "public, max-age=31536000, immutable");
  assert.equal(served.headers.get("access-control-allow-origin"), "*");
  const r = await fetch(`${gw.base}/client/foyer.js`, { redirect: "manual", headers: { Origin: otherOrigin } });
  assert.equal(r.status, 302);
  assert.equal(new URL(r.headers.get("location"), gw.base).pathname, `/assets/${hashed[0]}`);
  const maxAge = Number(/max-age=(\d+)/.exec(r.headers.get("cache-control") ?? "")?.[1] ?? NaN);
  assert.ok(maxAge <= 60 || /no-cache/.test(r.headers.get("cache-control")), `short-lived: ${r.headers.get("cache-control")}`);
  assert.equal(r.headers.get("access-control-allow-origin"), "*", "CORS on the redirect too, or import() fails");
  assert.equal((await fetch(`${gw.base}/assets/foyer.js`)).status, 404, "the unhashed name is not served");
});

// ---- liveness ----------------------------------------------------------------------------

test("a half-open socket is detected within the bound and resumed with nothing missed", async () => {
  const channel = `orders:${unique("half")}`;
  const c = await clientPage({ channel, sub: "staff-h", tag: "half", via: proxy.port,
    options: { pingEveryMs: 1000, pongTimeoutMs: 1500, minBackoffMs: 100 } });
  await c.waitState("open");
  await gw.publish(channel, "order.created", { n: 1 });
  await gw.publish(channel, "order.created", { n: 2 });
  assert.deepEqual(await c.waitEvents(2), [1, 2]);
  const frozenAt = Date.now();
  const release = proxy.freeze();
  for (const k of [3, 4, 5]) await gw.publish(channel, "order.created", { n: k }); // into the dead socket
  const dead = await c.waitState("reconnecting", frozenAt, 8000);
  const detectedIn = dead.t - frozenAt;
  assert.match(dead.reason, /no answer to ping within 1500 ms/);
  assert.ok(detectedIn <= 1000 + 1500 + 1000, `detected after ${detectedIn} ms (ping every 1 s + 1.5 s bound)`);
  await c.waitState("open", dead.t);
  await gw.publish(channel, "order.created", { n: 6 });
  assert.deepEqual(await c.waitEvents(6), [1, 2, 3, 4, 5, 6], "every seq once, in order");
  await sleep(300);
  assert.deepEqual(await c.events(), [1, 2, 3, 4, 5, 6], "nothing delivered twice");
  release();
  await c.close();
});

test("a page that becomes visible again checks liveness at once", async () => {
  const channel = `orders:${unique("vis")}`;
  const c = await clientPage({ channel, sub: "staff-v", tag: "vis", via: proxy.port,
    options: { pingEveryMs: 600_000, pongTimeoutMs: 1000, minBackoffMs: 100 } });
  await c.waitState("open");
  const release = proxy.freeze();
  await gw.publish(channel, "order.created", { n: 1 });
  const wokeAt = Date.now();
  await c.p.evaluate(() => document.dispatchEvent(new Event("visibilitychange"))); // headless pages are visible
  const dead = await c.waitState("reconnecting", wokeAt, 5000);
  assert.ok(dead.t - wokeAt <= 1000 + 1000, `detected ${dead.t - wokeAt} ms after becoming visible (1 s bound)`);
  assert.deepEqual(await c.waitEvents(1), [1]);
  release();
  await c.close();
});

test("offline pauses the client and online resumes at once, with nothing missed", async () => {
  const channel = `orders:${unique("net")}`;
  // A 60 s backoff bound: only the online event can explain a quick reconnect.
  const c = await clientPage({ channel, sub: "staff-o", tag: "net", options: { minBackoffMs: 60_000 } });
  await c.waitState("open");
  await gw.publish(channel, "order.created", { n: 1 });
  await c.waitEvents(1);
  const wentOffline = Date.now();
  await c.context.setOffline(true);
  await c.waitState("offline", wentOffline, 5000);
  await gw.publish(channel, "order.created", { n: 2 });
  await gw.publish(channel, "order.created", { n: 3 });
  const hitsBefore = tokens.times("net").length;
  await sleep(1500);
  assert.equal(tokens.times("net").length, hitsBefore, "no attempts while offline");
  assert.equal((await c.states()).at(-1).state, "offline");
  const back = Date.now();
  await c.context.setOffline(false);
  const open = await c.waitState("open", back, 5000);
  assert.ok(open.t - back < 3000, `reconnected ${open.t - back} ms after coming back online`);
  assert.deepEqual(await c.waitEvents(3), [1, 2, 3]);
  await gw.publish(channel, "order.created", { n: 4 });
  assert.deepEqual(await c.waitEvents(4), [1, 2, 3, 4]);
  await c.close();
});

// ---- backoff ----------------------------------------------------------------------------

test("repeated 4401s refetch the token with a growing wait, never in a loop", async () => {
  const channel = `orders:${unique("auth")}`;
  tokens.modes.auth = "forged"; // well-formed tokens the gateway refuses
  // The jitter pinned at its bound: the waits are 0 (first 4401: an expired token, at once), then 200, 400, 800, 1600 ms.
  const c = await clientPage({ channel, sub: "staff-a", tag: "auth", fixedRandom: 0.999,
    options: { minBackoffMs: 100, maxBackoffMs: 1600 } });
  await c.p.waitForFunction(() => window.__log.states.filter((s) => s.code === 4401 && s.retryInMs !== null).length >= 5, null, { timeout: 20000 });
  const hits = tokens.times("auth").slice(0, 6);
  const g = gaps(hits);
  const waits = (await c.states()).filter((s) => s.code === 4401 && s.retryInMs !== null).map((s) => s.retryInMs);
  assert.deepEqual(waits.slice(0, 5), [0, 200, 400, 799, 1598]);
  assert.ok(g[0] < 1000, `first refetch at once (${g[0]} ms)`);
  // Each gap is at least its wait (which doubles); connection set-up adds a little noise on top.
  for (let i = 1; i < g.length; i++) assert.ok(g[i] >= waits[i], `gap ${i} (${g[i]} ms) >= ${waits[i]} ms: ${g.join(", ")}`);
  // The last wait is four times the first; a busy machine can add ~200 ms to any one gap.
  assert.ok(g.at(-1) > 1.5 * g[1], `gaps grow: ${g.join(", ")} ms`);
  tokens.modes.auth = "good";
  await c.waitState("open", 0, 10000);
  await c.close();
});

test("a connection that is accepted and then cut keeps backing off until it stays up", async () => {
  const channel = `orders:${unique("flap")}`;
  proxy.state.killAfterMs = 300; // every connection gets its welcome, then dies
  const c = await clientPage({ channel, sub: "staff-f", tag: "flap", via: proxy.port, fixedRandom: 0.999,
    options: { minBackoffMs: 100, maxBackoffMs: 10_000, minUptimeMs: 1500 } });
  await c.p.waitForFunction(() => window.__log.states.filter((s) => s.state === "reconnecting" && s.retryInMs !== null).length >= 4, null, { timeout: 20000 });
  proxy.state.killAfterMs = null;
  const states = await c.states();
  assert.ok(states.filter((s) => s.state === "open").length >= 4, "each attempt was welcomed");
  const retries = states.filter((s) => s.state === "reconnecting" && s.retryInMs !== null).slice(0, 4);
  assert.deepEqual(retries.map((s) => s.attempt), [1, 2, 3, 4], "a welcome does not reset the count");
  assert.deepEqual(retries.map((s) => s.retryInMs), [100, 200, 400, 799]);
  const open = await c.waitState("open", retries.at(-1).t, 10000);
  await sleep(1800); // past minUptimeMs
  assert.equal(await c.p.evaluate(() => window.__client.attempt), 0, "a connection up for minUptimeMs resets the count");
  assert.equal((await c.states()).at(-1).t, open.t, "and it stayed open");
  await c.close();
});

test("4429 waits at least rateLimitedMs (10 s) before the next attempt", async () => {
  const channel = `orders:${unique("busy")}`;
  // MAX_SOCKETS_PER_USER is 2 on this gateway: two sockets of the same user fill the channel.
  const holder = await clientPage({ channel, sub: "staff-r", tag: "hold", options: {} });
  await holder.waitState("open");
  await holder.p.evaluate(async ({ channel, url }) => {
    const { connect } = await import("/client/foyer.js");
    await new Promise((ok) => {
      window.__second = connect({ channel, getToken: async () => (await fetch(url)).text(), onState: (s) => s === "open" && ok() });
    });
  }, { channel, url: tokens.url({ sub: "staff-r", channel, tag: "hold" }) });
  const c = await clientPage({ channel, sub: "staff-r", tag: "busy", options: { minBackoffMs: 100 } });
  const limited = await c.p.waitForFunction(() => window.__log.states.find((s) => s.code === 4429 && s.retryInMs !== null), null, { timeout: 10000 }).then((h) => h.jsonValue());
  assert.ok(limited.retryInMs >= 10_000, `waits ${limited.retryInMs} ms`);
  await sleep(8000);
  assert.equal(tokens.times("busy").length, 1, "no attempt within the 10 s");
  await holder.p.evaluate(() => window.__second.close()); // a slot frees up
  const open = await c.waitState("open", limited.t, 10000);
  const [first, second] = tokens.times("busy");
  assert.ok(second - first >= 10_000, `attempts ${second - first} ms apart`);
  assert.ok(open.t - limited.t >= 10_000);
  await c.close();
  await holder.close();
});

// ---- another origin ---------------------------------------------------------------------

test("a page on another origin loads the current client from the stable URL and connects", async () => {
  const channel = `orders:${unique("xo")}`;
  const frag = () => new URLSearchParams({ client: `${gw.base}/client/foyer.js`, channel,
    token_url: tokens.url({ sub: "staff-x", channel, tag: "xo" }) });
  const context = await browser.newContext();
  const p = await context.newPage();
  const requested = [];
  p.on("request", (r) => requested.push(new URL(r.url()).pathname));
  await p.goto(`${otherOrigin}/app.html#${frag()}`);
  await p.waitForFunction(() => document.getElementById("state").textContent === "open", null, { timeout: 15000 });
  assert.deepEqual(requested.filter((path) => path.includes("foyer")).map((path) => path.replace(/[0-9a-f]{10}/, "HASH")),
    ["/client/foyer.js", "/assets/foyer.HASH.js"], "the stable URL, then the hashed file it points to");
  assert.equal(await p.evaluate(() => window.__version), JSON.parse(readFileSync(join(root, "client/package.json"), "utf8")).version);
  await gw.publish(channel, "order.created", { n: 1 });
  await p.waitForFunction(() => window.__events.length === 1, null, { timeout: 5000 });
  // The control: the same page from an origin the gateway does not allow never gets in.
  const q = await context.newPage();
  await q.goto(`${strangerOrigin}/app.html#${frag()}`);
  await q.waitForFunction(() => document.getElementById("state").textContent === "reconnecting", null, { timeout: 15000 });
  assert.notEqual(await q.textContent("#state"), "open");
  await context.close();
});
