// Floors of the runtime, measured under the same `wrangler dev` as Foyer and the baseline:
// what the hot paths cost with nothing of a gateway's own around them. A budget a floor
// cannot meet is out of reach by measurement (bench/README.md reads each figure; one of them,
// 200 subscribers' publishes, came out above the baseline and is not taken as a floor).
//
// 1. A floor gateway (`BENCH_FLOOR=1 scripts/bench --only=single|storm` runs it as a third
//    column): the same routes and frames as the baseline, and only the runtime's steps. A
//    connect reaches its channel's object, which accepts the socket (Hibernation API) and
//    sends a welcome; a `/publish` reads and parses its body, calls each channel's object
//    over RPC, which numbers the event in memory and sends it to every socket. No token, no
//    signature, no SQL, no dedupe: nothing the contract asks for beyond moving the bytes.
//    `BENCH_FLOOR=writes` adds the one write the contract needs: each event stored (one
//    `INSERT`, its id unique) before it is answered. `BENCH_FLOOR=contract` adds, to that
//    write, the other step the contract cannot skip: the publish signature checked (the
//    baseline's WebCrypto HMAC, its key imported once) before the body is parsed.
//
// 2. `GET /objects`: what the first storm of a fresh gateway pays for each Durable Object it
//    wakes for the first time (Foyer's first batch reaches its room and 16 directory shards,
//    the baseline's its room alone), in ms, the median of 7 trials each on objects never used
//    before: the wall time of calls made in parallel to 16 objects, as that batch makes them:
//    - `fresh`: each object's first call, which creates one table and writes one row (the
//      least a directory shard does on its first record);
//    - `warm`: the same 16 objects again, writing one row each;
//    - `fresh_no_sql`: objects of the same class called for the first time, touching no
//      storage.
//    Under `wrangler dev` every object shares one thread, so the wall time is that thread's work.
//
// 3. A floor inbox (`BENCH_FLOOR=1 scripts/bench --only=inbox` runs the inbox scenario on it
//    after Foyer): `POST /links` stores each chat's inboxes in the chat's object; a chat `send`
//    is numbered in memory and sent to the chat's sockets, then handed to each linked inbox
//    over RPC, which numbers it and sends it on. No token, no SQL per message, no dedupe, no
//    retry: the least a forward can cost the local runtime's one thread.
import { DurableObject } from "cloudflare:workers";

export class Shard extends DurableObject {
  record(sub) {
    const sql = this.ctx.storage.sql;
    sql.exec("CREATE TABLE IF NOT EXISTS joined (sub TEXT PRIMARY KEY, at INTEGER NOT NULL)");
    sql.exec("INSERT OR REPLACE INTO joined (sub, at) VALUES (?, ?)", sub, Date.now());
    return 1;
  }
  ping() {
    return 1;
  }

  // The floor gateway's channel object: a connect (the Worker hands it every /ws/* request).
  fetch(request) {
    const [client, server] = Object.values(new WebSocketPair());
    const m = new URL(request.url).pathname.match(/^\/ws\/([a-z]+)\/([^/]+)/);
    this.ctx.acceptWebSocket(server, [m ? `${m[1]}:${m[2]}` : ""]);
    server.send(`{"type":"welcome","seq":${this.seq ?? 0}}`);
    return new Response(null, { status: 101, webSocket: client, headers: { "Sec-WebSocket-Protocol": "foyer.v1" } });
  }
  publish(channel, events) {
    const sockets = this.ctx.getWebSockets();
    // FLOOR_WRITES (BENCH_FLOOR=writes): the one write the contract cannot do without, each
    // event stored before it is answered (its id unique: the dedupe is the index's).
    const sql = this.env.FLOOR_WRITES ? this.ctx.storage.sql : null;
    if (sql && !this.table) {
      sql.exec("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, event TEXT, data TEXT, ts INTEGER)");
      this.table = true;
    }
    return events.map((e) => {
      this.seq = (this.seq ?? 0) + 1;
      const ts = Date.now(), data = JSON.stringify(e.data ?? null);
      sql?.exec("INSERT INTO events VALUES (?, ?, ?, ?, ?)", this.seq, e.id, e.event, data, ts);
      const frame = `{"type":"event","channel":${JSON.stringify(channel)},"seq":${this.seq},"id":${JSON.stringify(e.id)},"event":${JSON.stringify(e.event)},"data":${data},"ts":${ts}}`;
      for (const ws of sockets) ws.send(frame);
      return { seq: this.seq, delivered: sockets.length, duplicate: false };
    });
  }
  // The floor inbox: links are stored (the objects sleep between set-up and use), read once
  // an instance.
  link(inbox) {
    const sql = this.ctx.storage.sql;
    sql.exec("CREATE TABLE IF NOT EXISTS links (inbox TEXT PRIMARY KEY)");
    sql.exec("INSERT OR IGNORE INTO links (inbox) VALUES (?)", inbox);
    this.links = undefined;
    return true;
  }
  inboxes() {
    if (this.links === undefined) {
      const sql = this.ctx.storage.sql;
      const table = sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'links'").toArray().length > 0;
      this.links = table ? sql.exec("SELECT inbox FROM links").toArray().map((r) => r.inbox) : [];
    }
    return this.links;
  }
  // A chat `send`: to the chat's sockets first, then a copy to each linked inbox.
  async webSocketMessage(ws, message) {
    let m;
    try {
      m = JSON.parse(message);
    } catch {
      return;
    }
    if (m?.type !== "send" || typeof m.text !== "string") return;
    const channel = this.ctx.getTags(ws)[0];
    this.seq = (this.seq ?? 0) + 1;
    const seq = this.seq;
    const body = `"id":${JSON.stringify(String(m.id))},"event":"chat.message","data":{"text":${JSON.stringify(m.text)}},"ts":${Date.now()}`;
    const frame = `{"type":"event","channel":${JSON.stringify(channel)},"seq":${seq},${body}}`;
    for (const s of this.ctx.getWebSockets()) s.send(frame);
    const inboxes = this.inboxes();
    await Promise.all(inboxes.map((i) => this.env.SHARD.get(this.env.SHARD.idFromName(i)).forward(i, channel, seq, body)));
  }
  forward(inbox, channel, seq, body) {
    this.seq = (this.seq ?? 0) + 1;
    const frame = `{"type":"event","channel":${JSON.stringify(inbox)},"seq":${this.seq},${body},"source":{"channel":${JSON.stringify(channel)},"seq":${seq}}}`;
    for (const s of this.ctx.getWebSockets()) s.send(frame);
    return 1;
  }
  webSocketClose(ws) {
    try { ws.close(1000); } catch {}
  }
  webSocketError() {}
}

const N = 16;

async function timed(env, tag, method) {
  const start = Date.now();
  await Promise.all(Array.from({ length: N }, (_, i) => env.SHARD.get(env.SHARD.idFromName(`${tag}/${i}`))[method](`u${i}`)));
  return Date.now() - start;
}

let publishKey;
/** The contract's signature, `t=<unix>,v1=<hex HMAC-SHA256 of "t./publish.body">`, within 5 minutes. */
async function signed(env, request, body) {
  const enc = new TextEncoder();
  publishKey ??= crypto.subtle.importKey("raw", enc.encode(env.PUBLISH_SECRETS.split(",")[0]), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const sig = Object.fromEntries((request.headers.get("X-Foyer-Signature") ?? "").split(",").map((kv) => kv.split("=")));
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", await publishKey, enc.encode(`${sig.t}./publish.${body}`)));
  const hex = [...mac].map((b) => b.toString(16).padStart(2, "0")).join("");
  return hex === sig.v1 && Math.abs(Date.now() / 1000 - Number(sig.t)) <= 300;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return new Response("ok");
    const m = url.pathname.match(/^\/ws\/(orders|payment|chat|inbox)\/([A-Za-z0-9_-]{1,64})\/?$/);
    if (m) return env.SHARD.get(env.SHARD.idFromName(`${m[1]}:${m[2]}`)).fetch(request);
    if (url.pathname === "/links" && request.method === "POST") {
      const { links } = JSON.parse(await request.text());
      await Promise.all(links.map((l) => env.SHARD.get(env.SHARD.idFromName(l.channel)).link(l.inbox)));
      return Response.json({ results: links.map(() => ({ linked: true })) });
    }
    if (url.pathname === "/publish" && request.method === "POST") {
      const body = await request.text();
      if (env.FLOOR_SIGNED && !(await signed(env, request, body))) return Response.json({ error: "unauthorized" }, { status: 401 });
      const parsed = JSON.parse(body);
      const groups = new Map();
      for (const msg of parsed.messages ?? [parsed]) {
        for (const ch of msg.channels) {
          if (!groups.has(ch)) groups.set(ch, []);
          groups.get(ch).push(msg);
        }
      }
      const results = await Promise.all([...groups].map(([ch, events]) => env.SHARD.get(env.SHARD.idFromName(ch)).publish(ch, events)));
      return Response.json({ results: results.flat() });
    }
    if (url.pathname !== "/objects") return new Response("not found", { status: 404 });
    const fresh = [];
    const warm = [];
    const bare = [];
    for (let trial = 0; trial < 7; trial++) {
      const tag = crypto.randomUUID();
      fresh.push(await timed(env, tag, "record"));
      warm.push(await timed(env, tag, "record"));
      bare.push(await timed(env, `${tag}-bare`, "ping"));
    }
    return Response.json({ objects: N, fresh: median(fresh), warm: median(warm), fresh_no_sql: median(bare), trials: { fresh, warm, bare } });
  },
};
