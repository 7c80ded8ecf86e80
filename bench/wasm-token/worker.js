// The baseline (bench/baseline/worker.js), its token check in Rust compiled to wasm
// (check.rs): the least a Rust gateway runs in wasm on a connect. Its Room and refusals are
// the baseline's.
// Only the routes of the first storm: /healthz and the sockets.
import check from "../target/wasm-token/check.wasm";
import { b64url, closeWith } from "../baseline/worker.js";
export { Room } from "../baseline/worker.js";

const enc = new TextEncoder();
const wasm = new WebAssembly.Instance(check, {}).exports;
let keyed = false;

/** Writes the strings into the module's buffer, one after the other; their byte lengths. */
function put(...strings) {
  const bytes = strings.map((s) => enc.encode(s));
  const at = wasm.buffer(bytes.reduce((n, b) => n + b.length, 0));
  const view = new Uint8Array(wasm.memory.buffer);
  let offset = at;
  for (const b of bytes) {
    view.set(b, offset);
    offset += b.length;
  }
  return bytes.map((b) => b.length);
}

function verifyToken(env, token, channel) {
  if (!keyed) {
    const raw = b64url(JSON.parse(env.JWT_KEYS).keys[0].k);
    const at = wasm.buffer(raw.length);
    new Uint8Array(wasm.memory.buffer).set(raw, at);
    wasm.set_key(raw.length);
    keyed = true;
  }
  const exp = wasm.check(...put(token, channel, env.JWT_ISSUER), Date.now() / 1000);
  return exp < 0 ? -exp : { exp };
}

export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    if (url.pathname === "/healthz") return Response.json({ ok: true, build: "wasm-token" });
    const m = url.pathname.match(/^\/ws\/(orders|payment|chat)\/([A-Za-z0-9_-]{1,64})\/?$/);
    if (!m) return new Response("not found", { status: 404 });
    if (req.headers.get("Upgrade") !== "websocket") return new Response("upgrade", { status: 426 });
    const offers = (req.headers.get("Sec-WebSocket-Protocol") ?? "").split(",").map((s) => s.trim());
    const bearer = offers.find((o) => o.startsWith("bearer."))?.slice(7);
    const channel = `${m[1]}:${m[2]}`;
    const claims = bearer ? verifyToken(env, bearer, channel) : 4401;
    if (typeof claims === "number") return closeWith(claims, offers.includes("foyer.v1"));
    const stub = env.ROOM.get(env.ROOM.idFromName(channel));
    return stub.fetch("https://room/connect", { headers: { Upgrade: "websocket", "X-Channel": channel, "X-Exp": String(claims.exp) } });
  },
};
