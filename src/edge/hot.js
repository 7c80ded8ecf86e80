// The hot paths of the shell, in JavaScript: where workers-rs' general wrappers cost more
// than the work (a wasm<->JS crossing per socket, a Request/Response conversion per call,
// a body read through a Rust stream adapter). Rust decides; these only move bytes. Found
// with a CPU profile of the benchmark (README, "Benchmark"). Bound in src/edge/js.rs;
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

/** Sockets still open (a socket being closed is CLOSING, then CLOSED), with `tag` or all. */
export function count_open(state, tag) {
  let open = 0;
  for (const ws of tag ? state.getWebSockets(tag) : state.getWebSockets()) if (ws.readyState === 1) open++;
  return open;
}

/**
 * A body read with a byte cap that holds while it arrives: a chunked body (no
 * Content-Length) is cut off at the limit, never buffered whole. null: over the limit.
 */
export async function read_capped(request, max) {
  if (!request.body) return new Uint8Array(0);
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

/** A JSON request to a Durable Object; its text answer, or a throw on any status but 200. */
export async function post(env, binding, name, path, body) {
  const response = await stub(env, binding, name).fetch(OBJECT_ORIGIN + path, { method: "POST", body });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`object answered ${response.status} on ${path}`);
  return text;
}

/** A socket accepted and closed at once with `code` (subprotocol "" selects none). */
export function refuse(code, reason, subprotocol) {
  const pair = new WebSocketPair();
  pair[1].accept();
  pair[1].close(code, reason);
  const headers = subprotocol ? { "Sec-WebSocket-Protocol": subprotocol } : {};
  return new Response(null, { status: 101, webSocket: pair[0], headers });
}

/** Hands a verified socket to its room; the room's 101 answer is returned as is. */
export function open_socket(env, binding, name, ticket_header, ticket) {
  const headers = { Upgrade: "websocket", [ticket_header]: ticket };
  return stub(env, binding, name).fetch(OBJECT_ORIGIN + "/connect", { headers });
}

/** Keeps the object alive until `promise` settles (work after a response was returned). */
export function wait_until(state, promise) {
  try {
    state.waitUntil(promise);
  } catch (_) {
    /* the promise still runs */
  }
}
