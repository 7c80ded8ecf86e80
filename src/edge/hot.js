// The hot paths of the shell, in JavaScript: where workers-rs' general wrappers cost more
// than the work (a wasm<->JS crossing per socket, a Request/Response conversion per call,
// a body read through a Rust stream adapter). Rust decides; these only move bytes. Found
// with a CPU profile of the benchmark (bench/README.md). Bound in src/edge/js.rs;
// each function has a unit test in tests/hot.test.mjs.

/** The origin of every request to a Durable Object: the object ignores it; paths matter. */
export const OBJECT_ORIGIN = "https://object";

/** The object's open sockets, as one JS array (no per-socket handle in wasm). */
export function sockets(state) {
  return state.getWebSockets();
}

/** How many sockets carry `tag`. */
export function count_tagged(state, tag) {
  return state.getWebSockets(tag).length;
}

/**
 * Sockets still open (a socket being closed is CLOSING, then CLOSED), with `tag` or all,
 * other than `leaving`: in its own close handler a socket can still read as OPEN.
 */
export function count_open(state, tag, leaving) {
  let open = 0;
  for (const ws of tag ? state.getWebSockets(tag) : state.getWebSockets()) if (ws.readyState === 1 && ws !== leaving) open++;
  return open;
}

/**
 * A body read with a byte cap that holds while it arrives: a chunked body (no
 * Content-Length) is cut off at the limit, never buffered whole. null: over the limit.
 */
export async function read_capped(request, max) {
  if (!request.body) return new Uint8Array(0);
  // A declared length within the cap: the runtime delivers exactly that many bytes (HTTP
  // framing), so the body is read in one go; the check after it costs nothing.
  const declared = Number(request.headers.get("Content-Length") ?? NaN);
  if (Number.isInteger(declared) && declared >= 0 && declared <= max) {
    const whole = new Uint8Array(await request.arrayBuffer());
    return whole.byteLength <= max ? whole : null;
  }
  const reader = request.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      reader.releaseLock();
      return null;
    }
    chunks.push(value);
  }
  const body = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.byteLength;
  }
  return body;
}

/** Sends one frame to each socket; returns how many took it (closed ones throw). */
export function send_all(sockets, frame) {
  let sent = 0;
  for (const ws of sockets) {
    try {
      ws.send(frame);
      sent++;
    } catch (_) {
      /* closed or closing: not counted */
    }
  }
  return sent;
}

function stub(env, binding, name) {
  const namespace = env[binding];
  return namespace.get(namespace.idFromName(name));
}

/**
 * A JSON request to a Durable Object; its text answer, or a throw on any status but 200, or
 * when `within_ms` (unless 0) passes first: the caller counts it failed and moves on (the
 * call itself may still land later; every such call is idempotent).
 */
export async function post(env, binding, name, path, body, within_ms = 0) {
  const call = ask(env, binding, name, path, body);
  if (!within_ms) return call;
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer on ${path} within ${within_ms} ms`)), within_ms);
  });
  try {
    return await Promise.race([call, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function ask(env, binding, name, path, body) {
  const response = await stub(env, binding, name).fetch(OBJECT_ORIGIN + path, { method: "POST", body });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`object answered ${response.status} on ${path}`);
  return text;
}

/**
 * An object's method over RPC (src/edge/entry.js: a room's `publish` and `forward`, a
 * directory shard's `joined`): JSON text in, JSON text out, with no Request, Response or
 * body stream on either side.
 */
export function call_method(env, binding, name, method, body) {
  return stub(env, binding, name)[method](body);
}

/** A socket accepted and closed at once with `code` (subprotocol "" selects none). */
export function refuse(code, reason, subprotocol) {
  const pair = new WebSocketPair();
  pair[1].accept();
  pair[1].close(code, reason);
  return upgraded(pair[0], subprotocol);
}

/** The 101 answer that hands `client`, one end of a socket pair, to the caller. */
export function upgraded(client, subprotocol) {
  const headers = subprotocol ? { "Sec-WebSocket-Protocol": subprotocol } : {};
  return new Response(null, { status: 101, webSocket: client, headers });
}

/** A JSON answer between objects: the text as is, status 200 or `status`. */
export function json_text(text, status) {
  return new Response(text, { status, headers: { "Content-Type": "application/json" } });
}

/**
 * The headers a socket's handshake reads, in one crossing into wasm rather than one each:
 * joined by "\n", an absent one as "\0" (a header value holds neither).
 */
export function handshake_headers(request) {
  const headers = request.headers;
  return [headers.get("Upgrade"), headers.get("Origin"), headers.get("Sec-WebSocket-Protocol"), headers.get("CF-Connecting-IP")]
    .map((value) => value ?? "\0")
    .join("\n");
}

/**
 * Hands a verified socket to its room; the room's 101 answer is returned as is. The Worker
 * returns this promise without awaiting it, so a failed call is answered here: 500, logged,
 * as any other failure of the Worker is.
 */
export function open_socket(env, binding, name, ticket_header, ticket) {
  const headers = { Upgrade: "websocket", [ticket_header]: ticket };
  return stub(env, binding, name)
    .fetch(OBJECT_ORIGIN + "/connect", { headers })
    .catch((e) => {
      console.error(`connect: the room could not be reached: ${e?.message ?? e}`);
      return new Response("INTERNAL SERVER ERROR", { status: 500 });
    });
}

// EdDSA and ES256 token signatures with the runtime's native crypto (BoringSSL in workerd),
// synchronously: jsonwebtoken's verifier interface is synchronous, which WebCrypto is not.
// `node:crypto` comes from the `nodejs_compat` flag (wrangler.toml); without it, asymmetric
// keys are refused when the configuration loads, never accepted unchecked.
let nodeCrypto;
function native() {
  if (nodeCrypto === undefined) {
    try {
      nodeCrypto = globalThis.process?.getBuiltinModule?.("node:crypto") ?? null;
    } catch (_) {
      nodeCrypto = null;
    }
  }
  return nodeCrypto;
}

function base64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * A public key for `alg` ("EdDSA": Ed25519's 32 bytes; "ES256": P-256's SEC1 uncompressed
 * point, 65 bytes), or null when it is not one (or there is no native crypto).
 */
export function public_key(alg, raw) {
  const c = native();
  if (!c) return null;
  let jwk;
  if (alg === "EdDSA" && raw.length === 32) jwk = { kty: "OKP", crv: "Ed25519", x: base64url(raw) };
  else if (alg === "ES256" && raw.length === 65 && raw[0] === 4)
    jwk = { kty: "EC", crv: "P-256", x: base64url(raw.subarray(1, 33)), y: base64url(raw.subarray(33)) };
  else return null;
  try {
    return c.createPublicKey({ key: jwk, format: "jwk" });
  } catch (_) {
    return null;
  }
}

/** An ECDSA INTEGER: minimal big-endian bytes, a leading 0 when the top bit is set. */
function derInteger(bytes) {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const body = bytes.subarray(i);
  return body[0] & 0x80 ? [0x02, body.length + 1, 0, ...body] : [0x02, body.length, ...body];
}

/** JWS R || S (32 bytes each) as the DER SEQUENCE node:crypto reads. */
export function es256_der(signature) {
  const r = derInteger(signature.subarray(0, 32));
  const s = derInteger(signature.subarray(32));
  return new Uint8Array([0x30, r.length + s.length, ...r, ...s]);
}

/** Whether `signature` (JWS raw form, 64 bytes for both) signs `signed` under `key`. */
export function verify_signature(alg, key, signed, signature) {
  const c = native();
  if (!c || !key || signature.length !== 64) return false;
  try {
    if (alg === "EdDSA") return c.verify(null, signed, key, signature);
    if (alg === "ES256") return c.verify("sha256", signed, key, es256_der(signature));
  } catch (_) {
    /* a malformed signature is a bad one */
  }
  return false;
}

// One Analytics Engine data point (`METRICS`, optional): index, blobs, doubles. A missing
// binding writes nothing, and a failing one must not fail the request that reports.
export function metric(env, index, blobs, doubles) {
  const dataset = env?.METRICS;
  if (!dataset || typeof dataset.writeDataPoint !== "function") return;
  try {
    dataset.writeDataPoint({ indexes: [index], blobs: Array.from(blobs), doubles: Array.from(doubles) });
  } catch { /* metrics are best effort */ }
}
