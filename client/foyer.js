// Foyer browser client: one live channel of a Foyer gateway (PROTOCOL.md v1.1), with token
// refresh, resume without loss, liveness checks and backoff built in. Dependency-free ES module.
//
//   import { connect } from "https://<gateway>/client/foyer.js";   // or the @foyer/client package
//   const live = connect({
//     channel: "orders:venue-1",
//     getToken: () => fetchToken("/api/foyer-token"), // your backend mints short-lived tokens
//     onEvent: (e) => render(e), onState: (state, reason) => light(state, reason),
//     onReset: () => reloadFromBackend(),
//   });
//
// docs/client.md describes every option, callback and state. In short:
// - The token travels in the WebSocket subprotocol (`bearer.<jwt>`), never in the URL.
// - Liveness: a `ping` every `pingEveryMs`; no `pong` (or any frame) within `pongTimeoutMs`
//   means the socket is dead (a half-open TCP connection after a network change): it is
//   dropped and the client resumes with `since`, so nothing is missed. The browser's
//   `offline` pauses the client; `online` reconnects at once; a page that becomes visible
//   again checks liveness at once.
// - Close codes (PROTOCOL.md): 1000 → stop; 4400/4403/1009 → stop (failed); 4426 → stop and
//   onNewVersion; 4401 → a new token, at once the first time, then with backoff; 4429 → at
//   least `rateLimitedMs`, plus backoff; anything else → backoff. Backoff is full jitter
//   (a random wait up to a bound that doubles per consecutive failure, capped), and the
//   failure count resets only once a connection has stayed up for `minUptimeMs`.

export const VERSION = "1.2.0";

const CHANNEL = /^(orders|payment|chat|inbox):[A-Za-z0-9_-]{1,64}$/;
const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const STOP = new Set([4400, 4403, 1009]);
const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);
const noop = () => {};

/** A token could not be obtained. `fatal` errors stop the client (state "failed"); others are retried with backoff. */
export class TokenError extends Error {
  constructor(message, { fatal = false, status = null } = {}) {
    super(message);
    this.name = "TokenError";
    this.fatal = fatal;
    this.status = status;
  }
}

/**
 * The wait before reconnect attempt number `attempt` (1, 2, …): full jitter, a uniformly
 * random time up to a bound that starts at `minBackoffMs` and doubles per attempt, capped at
 * `maxBackoffMs`. Random waits spread a reconnect storm (every page of a venue after a
 * deploy) over the whole interval.
 */
export function backoffDelay(attempt, { minBackoffMs = 500, maxBackoffMs = 30_000, random = Math.random } = {}) {
  if (attempt <= 0) return 0;
  return random() * backoffBound(attempt, minBackoffMs, maxBackoffMs);
}

function backoffBound(attempt, minBackoffMs, maxBackoffMs) {
  return Math.min(maxBackoffMs, minBackoffMs * 2 ** Math.min(attempt - 1, 30));
}

/** The build id the page was served with (`<meta name="foyer-build">`), or null. */
export function pageBuild() {
  return globalThis.document?.querySelector('meta[name="foyer-build"]')?.content || null;
}

// The gateway this module was loaded from: a page on another origin that imports
// https://<gateway>/client/foyer.js talks to that gateway without configuring anything.
// Bundled into another site's assets, it falls back to the page's own origin.
function defaultUrl() {
  try {
    const u = new URL(import.meta.url);
    if (u.protocol === "https:" || u.protocol === "http:") return u.origin;
  } catch { /* not a URL */ }
  return globalThis.location.origin;
}

// Callbacks belong to the page: an exception in one is reported (rethrown asynchronously,
// so it reaches the console and error trackers) but never breaks the connection.
function call(fn, ...args) {
  try {
    fn(...args);
  } catch (e) {
    setTimeout(() => { throw e; });
  }
}

function randomId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID(); // secure contexts only
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Opens one channel and keeps it open until close(), a terminal close code or a fatal token error. */
export function connect(options) {
  const {
    channel,
    getToken,
    url = defaultUrl(),
    onEvent = noop,
    onState = noop,
    onReset = noop,
    onPresence = noop,
    onWelcome = noop,
    onError = noop,
    onNewVersion = () => location.reload(),
    since = null,
    build = pageBuild(),
    minBackoffMs = 500,
    maxBackoffMs = 30_000,
    rateLimitedMs = 10_000,
    pingEveryMs = 25_000,
    pongTimeoutMs = 10_000,
    connectTimeoutMs = 10_000,
    minUptimeMs = 5_000,
    watchNetwork = true,
    random = Math.random,
  } = options ?? {};
  if (typeof channel !== "string" || !CHANNEL.test(channel)) throw new TypeError(`not a channel name: ${channel}`);
  if (typeof getToken !== "function") throw new TypeError("getToken must be a function returning a token");
  if (since !== null && !(Number.isInteger(since) && since >= 0)) throw new TypeError("since must be a non-negative integer or null");
  const base = String(url).replace(/^http/, "ws").replace(/\/+$/, "");
  if (!/^wss?:\/\/[^/]+$/.test(base)) throw new TypeError(`url must be the gateway's origin (ws:, wss:, http: or https:): ${url}`);
  const [kind, key] = channel.split(":");

  let ws = null; // the current socket; callbacks of any other socket are ignored
  let generation = 0; // bumped when an attempt is abandoned, so a late getToken() is ignored
  let lastSeq = since; // the last event delivered to the page
  let baseline = null; // the channel's seq at the first welcome: resume from there before any event
  let attempt = 0; // consecutive failures; reset after minUptimeMs of a healthy connection
  let done = false; // closed or failed: nothing happens until reconnect()
  let retryTimer = null, waitingFor = null; // the pending reconnect, and the close code it waits after
  let socketTimers = [], pongDeadline = null;
  let refreshes = 0;
  let roster = null, count = null; // chat presence: sub -> {sub, name, role}, and the distinct-user count

  const client = {
    state: "connecting",
    reason: "",
    code: null,
    attempt: 0,
    retryInMs: null,
    get lastSeq() { return lastSeq; },
    get presence() {
      if (count === null) return null;
      const members = roster ? [...roster.values()].sort((a, b) => (a.sub < b.sub ? -1 : a.sub > b.sub ? 1 : 0)) : [];
      return { count, members, complete: roster !== null && members.length === count };
    },
    send,
    close,
    reconnect,
    check: probe,
  };

  function setState(state, reason = "", code = null, retryInMs = null) {
    Object.assign(client, { state, reason, code, attempt, retryInMs });
    call(onState, state, reason, { code, attempt, retryInMs });
  }
  const afterSocket = (ms, fn) => socketTimers.push(setTimeout(fn, ms));
  function clearSocketTimers() {
    socketTimers.forEach(clearTimeout);
    socketTimers = [];
    clearTimeout(pongDeadline);
    pongDeadline = null;
  }
  const offline = () => globalThis.navigator?.onLine === false;

  async function open() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (done) return;
    abandon(1000, "reconnecting");
    if (offline()) return pause();
    const my = ++generation;
    if (attempt) setState("reconnecting", client.reason, client.code);
    else setState("connecting");
    let token;
    try {
      token = await getToken();
    } catch (e) {
      if (my !== generation || done) return;
      if (e?.fatal) return finish("failed", `no token: ${e.message}`, null);
      return failure(`token endpoint failed: ${e?.message ?? e}`, null);
    }
    if (my !== generation || done) return;
    token = typeof token === "string" ? token.trim() : "";
    if (!JWT.test(token)) return finish("failed", "getToken() returned something that is not a token", null);
    const params = new URLSearchParams();
    const resume = lastSeq ?? baseline;
    if (resume !== null) params.set("since", String(resume));
    if (build) params.set("build", build);
    const query = params.toString();
    const sock = new WebSocket(`${base}/ws/${kind}/${key}${query ? `?${query}` : ""}`, ["foyer.v1", `bearer.${token}`]);
    ws = sock;
    sock.onmessage = (m) => { if (ws === sock) receive(m.data); };
    sock.onclose = (e) => { if (ws === sock) closed(e.code, e.reason); };
    // A connect that hangs (SYN into a dead network) counts as a failure too.
    afterSocket(connectTimeoutMs, () => dead(`no welcome within ${connectTimeoutMs} ms`));
  }

  // Stop listening to the current socket and close it. A half-open socket never completes
  // the closing handshake, so its close event is not waited for.
  function abandon(code, reason) {
    const sock = ws;
    ws = null;
    clearSocketTimers();
    if (!sock) return;
    sock.onmessage = sock.onclose = null;
    try { sock.close(code, reason); } catch { /* already closed */ }
  }

  function dead(reason) {
    abandon(1000, "liveness");
    failure(reason, null);
  }

  // Liveness: a ping now; no frame at all within pongTimeoutMs means the socket is dead.
  function probe() {
    if (ws?.readyState !== 1) return;
    try { ws.send("ping"); } catch { /* closing; onclose follows */ }
    pongDeadline ??= setTimeout(() => dead(`no answer to ping within ${pongTimeoutMs} ms`), pongTimeoutMs);
  }

  function receive(text) {
    clearTimeout(pongDeadline); // any frame proves the socket alive
    pongDeadline = null;
    if (text === "pong") return;
    let f;
    try { f = JSON.parse(text); } catch { return; }
    switch (f?.type) {
      case "welcome": {
        clearSocketTimers(); // the connect timeout
        setState("open");
        afterSocket(minUptimeMs, () => { attempt = 0; client.attempt = 0; });
        if (baseline === null && Number.isInteger(f.seq)) baseline = f.seq;
        if (Array.isArray(f.presence)) {
          roster = new Map(f.presence.map((m) => [m.sub, { sub: m.sub, name: m.name ?? null, role: m.role ?? null }]));
          count = Number.isInteger(f.count) ? f.count : roster.size;
          call(onPresence, { type: "presence", action: "sync", channel, count, presence: [...roster.values()] }, client.presence);
        }
        call(onWelcome, f);
        refreshes = 0;
        scheduleRefresh(f.expires_at);
        afterSocket(pingEveryMs, function ping() { probe(); afterSocket(pingEveryMs, ping); });
        if (build && f.build && f.build !== build) call(onNewVersion, f.build);
        break;
      }
      case "event":
        if (!Number.isInteger(f.seq) || (lastSeq !== null && f.seq <= lastSeq)) return; // seen already
        lastSeq = f.seq;
        call(onEvent, f);
        break;
      case "reset":
        if (Number.isInteger(f.seq)) lastSeq = f.seq;
        call(onReset, f);
        break;
      case "refreshed":
        refreshes += 1;
        scheduleRefresh(f.expires_at);
        break;
      case "presence":
        if (roster && f.action === "joined") roster.set(f.sub, { sub: f.sub, name: f.name ?? null, role: f.role ?? null });
        if (roster && f.action === "left") roster.delete(f.sub);
        if (Number.isInteger(f.count)) count = f.count;
        call(onPresence, f, client.presence);
        break;
      case "error":
        call(onError, f);
        break;
    }
  }

  // Refresh over the open socket a minute (or a fifth of the lifetime) before expiry. After a
  // refresh the next one waits at least 30 s, so a page whose clock runs ahead of the
  // gateway's does not fetch tokens in a loop.
  function scheduleRefresh(expiresAt) {
    if (typeof expiresAt !== "number") return;
    const left = expiresAt * 1000 - Date.now();
    const wait = Math.max(refreshes ? 30_000 : 1000, left - Math.min(60_000, left / 5));
    afterSocket(wait, async () => {
      const sock = ws;
      try {
        const token = await getToken();
        if (ws === sock && sock?.readyState === 1) sock.send(JSON.stringify({ type: "refresh", token }));
      } catch { /* the gateway closes 4401 at expiry; the reconnect fetches a token with backoff */ }
    });
  }

  function closed(code, reason) {
    abandon();
    const why = reason ? `${code} ${reason}` : String(code);
    if (code === 1000) return finish("closed", reason ? `closed by the gateway: ${reason}` : "closed by the gateway", code);
    if (code === 4426) {
      finish("closed", "a new version is available", code);
      return call(onNewVersion, null);
    }
    if (STOP.has(code)) return finish("failed", why, code);
    failure(why, code);
  }

  function failure(reason, code) {
    attempt += 1;
    // A first 4401 is the ordinary expired token (a phone that slept): a new one at once.
    let delay = code === 4401 && attempt === 1 ? 0 : backoffDelay(attempt, { minBackoffMs, maxBackoffMs, random });
    if (code === 4429) delay += rateLimitedMs;
    waitingFor = code;
    setState("reconnecting", reason, code, Math.round(delay));
    retryTimer = setTimeout(open, delay);
  }

  function finish(state, reason, code) {
    done = true;
    generation += 1;
    abandon(1000, "closed");
    clearTimeout(retryTimer);
    retryTimer = null;
    unlisten();
    setState(state, reason, code);
  }

  // The browser says there is no network: drop the socket (it is dead or about to be) and
  // make no attempts until `online`.
  function pause() {
    generation += 1;
    abandon(1000, "offline");
    clearTimeout(retryTimer);
    retryTimer = null;
    setState("offline", "the browser is offline", null);
  }

  const onOffline = () => { if (!done) pause(); };
  const onOnline = () => {
    if (done) return;
    if (client.state === "offline") return open(); // at once: the backoff was for a dead network
    if (client.state === "open") return probe(); // a network change may have killed the socket
    if (retryTimer && waitingFor !== 4429 && waitingFor !== 4401) open();
  };
  const onVisibility = () => {
    if (!done && globalThis.document?.visibilityState === "visible") probe(); // after a sleep
  };
  function listen() {
    if (!watchNetwork || typeof globalThis.addEventListener !== "function") return;
    globalThis.addEventListener("online", onOnline);
    globalThis.addEventListener("offline", onOffline);
    globalThis.document?.addEventListener("visibilitychange", onVisibility);
  }
  function unlisten() {
    if (typeof globalThis.removeEventListener !== "function") return;
    globalThis.removeEventListener("online", onOnline);
    globalThis.removeEventListener("offline", onOffline);
    globalThis.document?.removeEventListener("visibilitychange", onVisibility);
  }

  // send(text), send(text, id), or send(text, { channel, id }): on an inbox connection,
  // `channel` names the chat the message goes to (protocol v1.2).
  function send(text, options) {
    if (ws?.readyState !== 1 || client.state !== "open") return false;
    const { id = randomId(), channel: to } = typeof options === "string" ? { id: options } : options ?? {};
    ws.send(JSON.stringify(to === undefined ? { type: "send", id, text } : { type: "send", channel: to, id, text }));
    return id;
  }

  function close() {
    if (!done) finish("closed", "closed by the page", null);
  }

  function reconnect() {
    done = false;
    listen();
    open();
  }

  listen();
  open();
  return client;
}

/**
 * A getToken for `connect` that fetches from your backend and trusts only a real token: the
 * answer must be 2xx (a redirect to a login page is refused, not followed) and its body a
 * compact JWT (text) or `{"token": "<jwt>"}` (JSON). Network errors and 5xx/408/429 are
 * retried with backoff; any other refusal is fatal (state "failed"), never a loop.
 */
export async function fetchToken(url, { credentials = "include", headers = {} } = {}) {
  let r;
  try {
    r = await fetch(url, { credentials, redirect: "manual", cache: "no-store", headers: { Accept: "text/plain, application/json", ...headers } });
  } catch (e) {
    throw new TokenError(`token endpoint unreachable (${e?.message ?? e})`);
  }
  if (r.type === "opaqueredirect" || (r.status >= 300 && r.status < 400)) {
    throw new TokenError("token endpoint redirected (not logged in?)", { fatal: true, status: r.status });
  }
  if (!r.ok) {
    const transient = r.status >= 500 || r.status === 408 || r.status === 429;
    throw new TokenError(`token endpoint answered ${r.status}`, { fatal: !transient, status: r.status });
  }
  let body = (await r.text()).trim();
  if (/json/i.test(r.headers.get("content-type") ?? "")) {
    try { body = JSON.parse(body)?.token; } catch { body = null; }
  }
  if (typeof body !== "string" || !JWT.test(body)) {
    throw new TokenError("token endpoint answered something that is not a token", { fatal: true, status: r.status });
  }
  return body;
}

function metaList(name) {
  const content = globalThis.document?.querySelector(`meta[name="${name}"]`)?.content ?? "";
  return content.split(/[\s,]+/).filter(Boolean);
}

/**
 * For pages opened from a link: reads `channel`, `token` and `token_url` from the URL
 * fragment (fragments are never sent to servers or logged), removes the token from the
 * address bar and history at once, and trusts nothing else in it: the channel must be
 * well-formed, and `token_url` must be on the page's own origin or one listed in
 * `tokenOrigins` (default: `<meta name="foyer-token-origins" content="https://a https://b">`);
 * a page served from a loopback address (local development) also accepts loopback token
 * endpoints. On any violation `error` says why, `channel` is null, and no request is made.
 * Cookies go along to the page's own origin and to listed origins (which must answer CORS
 * with credentials), never to the loopback exception.
 */
export function fragment({ tokenOrigins = metaList("foyer-token-origins"), credentials = null } = {}) {
  const params = new URLSearchParams(location.hash.slice(1));
  let token = params.get("token");
  if (params.has("token")) {
    params.delete("token");
    const rest = params.toString();
    history.replaceState(history.state, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  }
  const channel = params.get("channel");
  const rawTokenUrl = params.get("token_url");
  let error = null, tokenUrl = null, sendCookies = "same-origin";
  if (channel !== null && !CHANNEL.test(channel)) error = "the link names no valid channel";
  else if (token !== null && !JWT.test(token)) error = "the link's token is malformed";
  else if (rawTokenUrl !== null) {
    const listed = new Set(tokenOrigins.map((o) => { try { return new URL(o).origin; } catch { return null; } }));
    let u = null;
    try { u = new URL(rawTokenUrl, location.href); } catch { /* refused below */ }
    if (!u || !/^https?:$/.test(u.protocol) || u.username || u.password) error = "the link's token_url is not a URL";
    else if (u.origin === location.origin) tokenUrl = u.href;
    else if (listed.has(u.origin)) { tokenUrl = u.href; sendCookies = "include"; }
    else if (LOOPBACK.has(location.hostname) && LOOPBACK.has(u.hostname)) tokenUrl = u.href;
    else error = `the link's token_url (${u.origin}) is not an allowed origin`;
  }
  if (error) token = null;
  return {
    channel: error ? null : channel,
    params,
    tokenUrl,
    error,
    getToken: async () => {
      if (token) { const t = token; token = null; return t; } // the fragment's token, once
      if (!tokenUrl) throw new TokenError("no token endpoint: open this page from a new link", { fatal: true });
      return fetchToken(tokenUrl, { credentials: credentials ?? sendCookies });
    },
  };
}
