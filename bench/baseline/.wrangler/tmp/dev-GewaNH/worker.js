var __defProp = Object.defineProperty;
var __name = (target, value) => __defProp(target, "name", { value, configurable: true });

// worker.js
import { DurableObject } from "cloudflare:workers";
var enc = new TextEncoder();
var rowsRead = 0;
var rowsWritten = 0;
function sql(storage, query, ...args) {
  const cursor = storage.sql.exec(query, ...args);
  const rows = cursor.toArray();
  rowsRead += cursor.rowsRead;
  rowsWritten += cursor.rowsWritten;
  return rows;
}
__name(sql, "sql");
function meterLine(env, what, ctx) {
  const line = { what, rows_read: rowsRead, rows_written: rowsWritten };
  rowsRead = rowsWritten = 0;
  if (env.METER !== "log") return;
  if (ctx) Object.assign(line, { object: ctx.id.toString(), bytes: ctx.storage.sql.databaseSize });
  console.log(`foyer-meter ${JSON.stringify(line)}`);
}
__name(meterLine, "meterLine");
var b64url = /* @__PURE__ */ __name((s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0)), "b64url");
var keyPromise;
var pubKeyPromise;
function jwtKey(env) {
  keyPromise ??= crypto.subtle.importKey("raw", b64url(JSON.parse(env.JWT_KEYS).keys[0].k), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  return keyPromise;
}
__name(jwtKey, "jwtKey");
function publishKey(env) {
  pubKeyPromise ??= crypto.subtle.importKey("raw", enc.encode(env.PUBLISH_SECRETS.split(",")[0]), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return pubKeyPromise;
}
__name(publishKey, "publishKey");
async function verifyToken(env, token, channel) {
  const [h, p, s] = token.split(".");
  if (!s) return 4401;
  const ok = await crypto.subtle.verify("HMAC", await jwtKey(env), b64url(s), enc.encode(`${h}.${p}`));
  if (!ok) return 4401;
  const c = JSON.parse(new TextDecoder().decode(b64url(p)));
  const now = Date.now() / 1e3;
  if (c.iss !== env.JWT_ISSUER || c.aud !== "foyer" || !(c.exp + 30 > now)) return 4401;
  return (c.channels ?? []).includes(channel) ? c : 4403;
}
__name(verifyToken, "verifyToken");
function closeWith(code, offered) {
  const [client, server] = Object.values(new WebSocketPair());
  server.accept();
  server.close(code, "refused");
  return new Response(null, { status: 101, webSocket: client, headers: offered ? { "Sec-WebSocket-Protocol": "foyer.v1" } : {} });
}
__name(closeWith, "closeWith");
var worker_default = {
  async fetch(req, env) {
    try {
      return await handle(req, env);
    } finally {
      meterLine(env, "worker");
    }
  }
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
    if (hex !== sig.v1 || Math.abs(Date.now() / 1e3 - Number(sig.t)) > 300) return Response.json({ error: "unauthorized" }, { status: 401 });
    const parsed = JSON.parse(body);
    const messages = parsed.messages ?? [parsed];
    const groups = /* @__PURE__ */ new Map();
    messages.forEach((msg) => msg.channels.forEach((ch) => {
      if (!groups.has(ch)) groups.set(ch, []);
      groups.get(ch).push(msg);
    }));
    const results = await Promise.all([...groups].map(async ([ch, events]) => {
      const r = await env.ROOM.get(env.ROOM.idFromName(ch)).fetch("https://room/publish", { method: "POST", body: JSON.stringify({ channel: ch, events }) });
      return (await r.json()).map((x, i) => ({ id: events[i].id, channel: ch, ...x }));
    }));
    return Response.json({ results: results.flat() });
  }
  return new Response("not found", { status: 404 });
}
__name(handle, "handle");
var Room = class extends DurableObject {
  static {
    __name(this, "Room");
  }
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
      const channel2 = req.headers.get("X-Channel");
      server.serializeAttachment({ channel: channel2 });
      server.send(JSON.stringify({ type: "welcome", channel: channel2, conn: crypto.randomUUID(), seq: this.seq(), build: "baseline", expires_at: Number(req.headers.get("X-Exp")) }));
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
      for (const ws of sockets) {
        try {
          ws.send(frame);
          delivered++;
        } catch {
        }
      }
      return { seq, delivered, duplicate: false };
    });
    return Response.json(out);
  }
  webSocketMessage(ws, msg) {
    if (msg === "ping") ws.send("pong");
    meterLine(this.env, "ws_message", this.ctx);
  }
  webSocketClose(ws) {
    try {
      ws.close(1e3);
    } catch {
    }
    meterLine(this.env, "ws_close", this.ctx);
  }
  webSocketError() {
  }
};

// ../../node_modules/wrangler/templates/middleware/middleware-ensure-req-body-drained.ts
var drainBody = /* @__PURE__ */ __name(async (request, env, _ctx, middlewareCtx) => {
  try {
    return await middlewareCtx.next(request, env);
  } finally {
    try {
      if (request.body !== null && !request.bodyUsed) {
        const reader = request.body.getReader();
        while (!(await reader.read()).done) {
        }
      }
    } catch (e) {
      console.error("Failed to drain the unused request body.", e);
    }
  }
}, "drainBody");
var middleware_ensure_req_body_drained_default = drainBody;

// ../../node_modules/wrangler/templates/middleware/middleware-miniflare3-json-error.ts
function reduceError(e) {
  return {
    name: e?.name,
    message: e?.message ?? String(e),
    stack: e?.stack,
    cause: e?.cause === void 0 ? void 0 : reduceError(e.cause)
  };
}
__name(reduceError, "reduceError");
var jsonError = /* @__PURE__ */ __name(async (request, env, _ctx, middlewareCtx) => {
  try {
    return await middlewareCtx.next(request, env);
  } catch (e) {
    const error = reduceError(e);
    return Response.json(error, {
      status: 500,
      headers: { "MF-Experimental-Error-Stack": "true" }
    });
  }
}, "jsonError");
var middleware_miniflare3_json_error_default = jsonError;

// .wrangler/tmp/bundle-EjrQEd/middleware-insertion-facade.js
var __INTERNAL_WRANGLER_MIDDLEWARE__ = [
  middleware_ensure_req_body_drained_default,
  middleware_miniflare3_json_error_default
];
var middleware_insertion_facade_default = worker_default;

// ../../node_modules/wrangler/templates/middleware/common.ts
var __facade_middleware__ = [];
function __facade_register__(...args) {
  __facade_middleware__.push(...args.flat());
}
__name(__facade_register__, "__facade_register__");
function __facade_invokeChain__(request, env, ctx, dispatch, middlewareChain) {
  const [head, ...tail] = middlewareChain;
  const middlewareCtx = {
    dispatch,
    next(newRequest, newEnv) {
      return __facade_invokeChain__(newRequest, newEnv, ctx, dispatch, tail);
    }
  };
  return head(request, env, ctx, middlewareCtx);
}
__name(__facade_invokeChain__, "__facade_invokeChain__");
function __facade_invoke__(request, env, ctx, dispatch, finalMiddleware) {
  return __facade_invokeChain__(request, env, ctx, dispatch, [
    ...__facade_middleware__,
    finalMiddleware
  ]);
}
__name(__facade_invoke__, "__facade_invoke__");

// .wrangler/tmp/bundle-EjrQEd/middleware-loader.entry.ts
var __Facade_ScheduledController__ = class ___Facade_ScheduledController__ {
  constructor(scheduledTime, cron, noRetry) {
    this.scheduledTime = scheduledTime;
    this.cron = cron;
    this.#noRetry = noRetry;
  }
  static {
    __name(this, "__Facade_ScheduledController__");
  }
  #noRetry;
  noRetry() {
    if (!(this instanceof ___Facade_ScheduledController__)) {
      throw new TypeError("Illegal invocation");
    }
    this.#noRetry();
  }
};
function wrapExportedHandler(worker) {
  if (__INTERNAL_WRANGLER_MIDDLEWARE__ === void 0 || __INTERNAL_WRANGLER_MIDDLEWARE__.length === 0) {
    return worker;
  }
  for (const middleware of __INTERNAL_WRANGLER_MIDDLEWARE__) {
    __facade_register__(middleware);
  }
  const fetchDispatcher = /* @__PURE__ */ __name(function(request, env, ctx) {
    if (worker.fetch === void 0) {
      throw new Error("Handler does not export a fetch() function.");
    }
    return worker.fetch(request, env, ctx);
  }, "fetchDispatcher");
  return {
    ...worker,
    fetch(request, env, ctx) {
      const dispatcher = /* @__PURE__ */ __name(function(type, init) {
        if (type === "scheduled" && worker.scheduled !== void 0) {
          const controller = new __Facade_ScheduledController__(
            Date.now(),
            init.cron ?? "",
            () => {
            }
          );
          return worker.scheduled(controller, env, ctx);
        }
      }, "dispatcher");
      return __facade_invoke__(request, env, ctx, dispatcher, fetchDispatcher);
    }
  };
}
__name(wrapExportedHandler, "wrapExportedHandler");
function wrapWorkerEntrypoint(klass) {
  if (__INTERNAL_WRANGLER_MIDDLEWARE__ === void 0 || __INTERNAL_WRANGLER_MIDDLEWARE__.length === 0) {
    return klass;
  }
  for (const middleware of __INTERNAL_WRANGLER_MIDDLEWARE__) {
    __facade_register__(middleware);
  }
  return class extends klass {
    #fetchDispatcher = /* @__PURE__ */ __name((request, env, ctx) => {
      this.env = env;
      this.ctx = ctx;
      if (super.fetch === void 0) {
        throw new Error("Entrypoint class does not define a fetch() function.");
      }
      return super.fetch(request);
    }, "#fetchDispatcher");
    #dispatcher = /* @__PURE__ */ __name((type, init) => {
      if (type === "scheduled" && super.scheduled !== void 0) {
        const controller = new __Facade_ScheduledController__(
          Date.now(),
          init.cron ?? "",
          () => {
          }
        );
        return super.scheduled(controller);
      }
    }, "#dispatcher");
    fetch(request) {
      return __facade_invoke__(
        request,
        this.env,
        this.ctx,
        this.#dispatcher,
        this.#fetchDispatcher
      );
    }
  };
}
__name(wrapWorkerEntrypoint, "wrapWorkerEntrypoint");
var WRAPPED_ENTRY;
if (typeof middleware_insertion_facade_default === "object") {
  WRAPPED_ENTRY = wrapExportedHandler(middleware_insertion_facade_default);
} else if (typeof middleware_insertion_facade_default === "function") {
  WRAPPED_ENTRY = wrapWorkerEntrypoint(middleware_insertion_facade_default);
}
var middleware_loader_entry_default = WRAPPED_ENTRY;
export {
  Room,
  __INTERNAL_WRANGLER_MIDDLEWARE__,
  middleware_loader_entry_default as default
};
//# sourceMappingURL=worker.js.map
