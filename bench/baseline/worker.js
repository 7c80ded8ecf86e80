// Baseline for the benchmark: the same contract as Foyer's hot paths (HS256 token in the
// subprotocol, signed /publish, per-channel seq persisted in SQLite, fan-out over hibernating
// WebSockets), written the way a Cloudflare user would in plain JavaScript.
import { DurableObject } from "cloudflare:workers";

const enc = new TextEncoder();

// The usage meter (METER=log): the same lines Foyer writes, for the cost scenario. Every SQL
// statement goes through sql(), which counts the rows its cursor reports.
let rowsRead = 0, rowsWritten = 0;
function sql(storage, query, ...args) {
  const cursor = storage.sql.exec(query, ...args);
  const rows = cursor.toArray();
  rowsRead += cursor.rowsRead;
  rowsWritten += cursor.rowsWritten;
  return rows;
}
function meterLine(env, what, ctx) {
  const line = { what, rows_read: rowsRead, rows_written: rowsWritten };
  rowsRead = rowsWritten = 0;
  if (env.METER !== "log") return;
  if (ctx) Object.assign(line, { object: ctx.id.toString(), bytes: ctx.storage.sql.databaseSize });
  console.log(`foyer-meter ${JSON.stringify(line)}`);
}
export const b64url = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
let keyPromise, pubKeyPromise;

function jwtKey(env) {
  keyPromise ??= crypto.subtle.importKey("raw", b64url(JSON.parse(env.JWT_KEYS).keys[0].k), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  return keyPromise;
}
function publishKey(env) {
  pubKeyPromise ??= crypto.subtle.importKey("raw", enc.encode(env.PUBLISH_SECRETS.split(",")[0]), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return pubKeyPromise;
}

async function verifyToken(env, token, channel) {
  const [h, p, s] = token.split(".");
  if (!s) return 4401;
  const ok = await crypto.subtle.verify("HMAC", await jwtKey(env), b64url(s), enc.encode(`${h}.${p}`));
  if (!ok) return 4401;
  const c = JSON.parse(new TextDecoder().decode(b64url(p)));
  const now = Date.now() / 1000;
  if (c.iss !== env.JWT_ISSUER || c.aud !== "foyer" || !(c.exp + 30 > now)) return 4401;
  return (c.channels ?? []).includes(channel) ? c : 4403;
}

export function closeWith(code, offered) {
  const [client, server] = Object.values(new WebSocketPair());
  server.accept();
  server.close(code, "refused");
  return new Response(null, { status: 101, webSocket: client, headers: offered ? { "Sec-WebSocket-Protocol": "foyer.v1" } : {} });
}

export default {
  async fetch(req, env) {
    try {
      return await handle(req, env);
    } finally {
      meterLine(env, "worker");
    }
  },
};

async function handle(req, env) {
  const url = new URL(req.url);
  if (url.pathname === "/healthz") return Response.json({ ok: true, build: "baseline" });
  const m = url.pathname.match(/^\/ws\/(orders|payment|chat)\/([A-Za-z0-9_-]{1,64})\/?$/);
  if (m) {
    if (req.headers.get("Upgrade") !== "websocket") return new Response("upgrade", { status: 426 });
    const offers = (req.headers.get("Sec-WebSocket-Protocol") ?? "").split(",").map((s) => s.trim());
    const bearer = offers.find((o) => o.startsWith("bearer."))?.slice(7);
    const channel = `${m[1]}:${m[2]}`;
    const claims = bearer ? await verifyToken(env, bearer, channel).catch(() => 4401) : 4401;
    if (typeof claims === "number") return closeWith(claims, offers.includes("foyer.v1"));
    const stub = env.ROOM.get(env.ROOM.idFromName(channel));
    return stub.fetch("https://room/connect", { headers: { Upgrade: "websocket", "X-Channel": channel, "X-Exp": String(claims.exp) } });
  }
  if (url.pathname === "/publish" && req.method === "POST") {
    const body = await req.text();
    const sig = Object.fromEntries((req.headers.get("X-Foyer-Signature") ?? "").split(",").map((kv) => kv.split("=")));
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", await publishKey(env), enc.encode(`${sig.t}./publish.${body}`)));
    const hex = [...mac].map((b) => b.toString(16).padStart(2, "0")).join("");
    if (hex !== sig.v1 || Math.abs(Date.now() / 1000 - Number(sig.t)) > 300) return Response.json({ error: "unauthorized" }, { status: 401 });
    const parsed = JSON.parse(body);
    const messages = parsed.messages ?? [parsed];
    const groups = new Map();
    messages.forEach((msg) => msg.channels.forEach((ch) => { if (!groups.has(ch)) groups.set(ch, []); groups.get(ch).push(msg); }));
    const results = await Promise.all([...groups].map(async ([ch, events]) => {
      const r = await env.ROOM.get(env.ROOM.idFromName(ch)).fetch("https://room/publish", { method: "POST", body: JSON.stringify({ channel: ch, events }) });
      return (await r.json()).map((x, i) => ({ id: events[i].id, channel: ch, ...x }));
    }));
    return Response.json({ results: results.flat() });
  }
  return new Response("not found", { status: 404 });
}

export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
    sql(ctx.storage, "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER); CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, id TEXT, event TEXT, data TEXT, ts INTEGER); CREATE TABLE IF NOT EXISTS ids (id TEXT PRIMARY KEY, seq INTEGER)");
  }
  seq() {
    return sql(this.ctx.storage, "SELECT v FROM meta WHERE k = 'seq'")[0]?.v ?? 0;
  }
  async fetch(req) {
    try {
      return await this.handle(req);
    } finally {
      meterLine(this.env, "object", this.ctx);
    }
  }
  async handle(req) {
    const url = new URL(req.url);
    if (url.pathname === "/connect") {
      const [client, server] = Object.values(new WebSocketPair());
      this.ctx.acceptWebSocket(server);
      const channel = req.headers.get("X-Channel");
      server.serializeAttachment({ channel });
      server.send(JSON.stringify({ type: "welcome", channel, conn: crypto.randomUUID(), seq: this.seq(), build: "baseline", expires_at: Number(req.headers.get("X-Exp")) }));
      return new Response(null, { status: 101, webSocket: client, headers: { "Sec-WebSocket-Protocol": "foyer.v1" } });
    }
    const { channel, events } = await req.json();
    const sockets = this.ctx.getWebSockets();
    const out = events.map((e) => {
      const dup = sql(this.ctx.storage, "SELECT seq FROM ids WHERE id = ?", e.id)[0];
      if (dup) return { seq: dup.seq, delivered: 0, duplicate: true };
      const seq = this.seq() + 1, ts = Date.now(), data = JSON.stringify(e.data ?? null);
      sql(this.ctx.storage, "INSERT INTO meta (k, v) VALUES ('seq', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", seq);
      sql(this.ctx.storage, "INSERT INTO events VALUES (?, ?, ?, ?, ?)", seq, e.id, e.event, data, ts);
      sql(this.ctx.storage, "INSERT INTO ids VALUES (?, ?)", e.id, seq);
      const frame = `{"type":"event","channel":${JSON.stringify(channel)},"seq":${seq},"id":${JSON.stringify(e.id)},"event":${JSON.stringify(e.event)},"data":${data},"ts":${ts}}`;
      let delivered = 0;
      for (const ws of sockets) { try { ws.send(frame); delivered++; } catch {} }
      return { seq, delivered, duplicate: false };
    });
    return Response.json(out);
  }
  webSocketMessage(ws, msg) {
    if (msg === "ping") ws.send("pong");
    meterLine(this.env, "ws_message", this.ctx);
  }
  webSocketClose(ws) {
    try { ws.close(1000); } catch {}
    meterLine(this.env, "ws_close", this.ctx);
  }
  webSocketError() {}
}
