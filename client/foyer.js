// Foyer browser client: one live channel, with token refresh, resume and backoff built in.
//
//   import { connect } from "/assets/foyer.js";
//   const live = connect({
//     channel: "orders:venue-1",
//     getToken: async () => (await fetch("/api/foyer-token")).text(), // your backend, never a static key
//     onEvent: (e) => render(e), onState: (s) => light(s), onReset: () => reloadFromBackend(),
//   });
//
// The token travels in the WebSocket subprotocol (`bearer.<jwt>`), never in the URL.
// Close codes drive what happens next (PROTOCOL.md): 4401 → new token, reconnect;
// 4403/4400 → stop; 4426 or a new deployed build → onNewVersion (default: reload);
// anything else → reconnect with full-jitter exponential backoff, resuming with `since`.

const STOP = new Set([4400, 4403, 1009]);

export function pageBuild() {
  return document.querySelector('meta[name="foyer-build"]')?.content ?? null;
}

export function connect({
  channel,
  getToken,
  url = location.origin.replace(/^http/, "ws"),
  onEvent = () => {},
  onState = () => {},
  onReset = () => {},
  onPresence = () => {},
  onError = () => {},
  onNewVersion = () => location.reload(),
  since = null,
  build = pageBuild(),
  maxBackoffMs = 30_000,
  pingEveryMs = 25_000,
}) {
  const [kind, key] = channel.split(":");
  // lastSeq: the last event seen; baseline: the channel's seq at the first welcome, so a
  // reconnect resumes from there even before any event arrived.
  let ws = null, lastSeq = since, baseline = null, attempt = 0, stopped = false, timers = [];
  const client = { state: "connecting", reason: "", send, close, get lastSeq() { return lastSeq; } };

  const setState = (state, reason = "") => {
    client.state = state;
    client.reason = reason;
    onState(state, reason);
  };
  const later = (fn, ms) => timers.push(setTimeout(fn, ms));
  const clearTimers = () => { timers.forEach(clearTimeout); timers = []; };

  async function open() {
    clearTimers();
    setState(attempt ? "reconnecting" : "connecting");
    let token;
    try {
      token = await getToken();
    } catch (e) {
      return retry(`token endpoint failed: ${e.message ?? e}`);
    }
    if (stopped) return;
    const params = new URLSearchParams();
    const resume = lastSeq ?? baseline;
    if (resume !== null) params.set("since", String(resume));
    if (build) params.set("build", build);
    ws = new WebSocket(`${url}/ws/${kind}/${key}?${params}`, ["foyer.v1", `bearer.${token}`]);
    ws.onmessage = (m) => receive(m.data);
    ws.onclose = (e) => closed(e.code, e.reason);
  }

  function receive(text) {
    if (text === "pong") return;
    let f;
    try { f = JSON.parse(text); } catch { return; }
    switch (f.type) {
      case "welcome":
        attempt = 0;
        setState("open");
        if (build && f.build && f.build !== build) onNewVersion(f.build);
        if (baseline === null) baseline = f.seq;
        scheduleRefresh(f.expires_at);
        later(function ping() { if (ws?.readyState === 1) ws.send("ping"); later(ping, pingEveryMs); }, pingEveryMs);
        break;
      case "event":
        if (lastSeq !== null && f.seq <= lastSeq) return; // already seen (dedupe by seq)
        lastSeq = f.seq;
        onEvent(f);
        break;
      case "reset":
        lastSeq = f.seq;
        onReset(f);
        break;
      case "refreshed":
        scheduleRefresh(f.expires_at);
        break;
      case "presence":
        onPresence(f);
        break;
      case "error":
        onError(f);
        break;
    }
  }

  // Refresh over the open socket a minute (or a fifth of the lifetime) before expiry.
  function scheduleRefresh(expiresAt) {
    const left = expiresAt * 1000 - Date.now();
    later(async () => {
      try {
        const token = await getToken();
        if (ws?.readyState === 1) ws.send(JSON.stringify({ type: "refresh", token }));
      } catch { /* the server closes 4401 at expiry; we reconnect with a new token then */ }
    }, Math.max(1000, left - Math.min(60_000, left / 5)));
  }

  function closed(code, reason) {
    ws = null;
    clearTimers();
    if (stopped) return setState("closed", reason);
    if (code === 4426) { setState("closed", "a new version is available"); stopped = true; return onNewVersion(null); }
    if (STOP.has(code)) { stopped = true; return setState("closed", `${code} ${reason}`.trim()); }
    if (code === 4401) { attempt = Math.max(attempt, 1); return later(open, 100); } // new token, at once
    retry(`${code} ${reason}`.trim());
  }

  function retry(reason) {
    attempt += 1;
    const cap = Math.min(maxBackoffMs, 500 * 2 ** Math.min(attempt, 10));
    setState("reconnecting", reason);
    later(open, Math.random() * cap); // full jitter: reconnect storms spread out
  }

  function send(text, id = crypto.randomUUID()) {
    if (ws?.readyState !== 1) return false;
    ws.send(JSON.stringify({ type: "send", id, text }));
    return id;
  }

  function close() {
    stopped = true;
    clearTimers();
    ws?.close(1000);
    setState("closed", "closed by the page");
  }

  open();
  return client;
}

// Pages get their token and channel from the URL fragment (never the query: fragments are
// not sent to servers or logged), and fresh tokens from `token_url` (the backend) if given.
export function fragment() {
  const p = new URLSearchParams(location.hash.slice(1));
  let token = p.get("token");
  const tokenUrl = p.get("token_url");
  return {
    channel: p.get("channel"),
    params: p,
    getToken: async () => {
      if (token) { const t = token; token = null; return t; } // the fragment's token, once
      if (!tokenUrl) throw new Error("no token endpoint");
      const r = await fetch(tokenUrl); // same-origin cookies go along; cross-origin needs CORS
      if (!r.ok) throw new Error(`token endpoint answered ${r.status}`);
      return (await r.text()).trim();
    },
  };
}
