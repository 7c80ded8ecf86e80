// Types of the Foyer browser client (foyer.js). docs/client.md describes the behaviour.

/** Package version; follows the wire protocol it speaks (PROTOCOL.md v1.1). */
export declare const VERSION: string;

/** `KIND:KEY`, KEY matching `[A-Za-z0-9_-]{1,64}`. */
export type ChannelName = `${"orders" | "payment" | "chat"}:${string}`;

/**
 * - `connecting`: the first attempt (token fetch, then the socket) is under way.
 * - `open`: `welcome` received; events flow.
 * - `reconnecting`: a failure happened (`reason`, `code`); the next attempt comes after
 *   `retryInMs` (backoff), or is under way.
 * - `offline`: the browser reports no network; no attempts until it is back.
 * - `closed`: finished normally: `close()`, a 1000 from the gateway, or 4426 (new version).
 * - `failed`: cannot continue: 4400, 4403, 1009, or no token (a fatal `TokenError`).
 */
export type State = "connecting" | "open" | "reconnecting" | "offline" | "closed" | "failed";

export interface StateDetail {
  /** The close code behind this state, when there is one. */
  code: number | null;
  /** Consecutive failures so far (reset after `minUptimeMs` of a healthy connection). */
  attempt: number;
  /** In `reconnecting`: the wait before the next attempt; null once that attempt is under way. */
  retryInMs: number | null;
}

export interface Member {
  sub: string;
  name: string | null;
  role: string | null;
}

export interface Welcome {
  type: "welcome";
  channel: string;
  conn: string;
  seq: number;
  build: string;
  expires_at: number;
  /** Chat channels only: who is connected, the newcomer included (at most 100, sorted by sub). */
  presence?: Member[];
  /** Chat channels only: distinct users connected (may exceed `presence.length`). */
  count?: number;
}

export interface FoyerEvent<T = unknown> {
  type: "event";
  channel: string;
  seq: number;
  id: string;
  event: string;
  data: T;
  ts: number;
  /** On an inbox: the linked channel the event was copied from, and its `seq` there (v1.2). */
  source?: EventSource;
}

/** Where an inbox's event comes from. */
export interface EventSource {
  channel: string;
  seq: number;
}

/** `send`'s options: the client id, and on an inbox the chat the message goes to. */
export interface SendOptions {
  id?: string;
  channel?: string;
}

export interface ChatMessageData {
  text: string;
  author: Member;
  client_id: string;
}

export interface Reset {
  type: "reset";
  channel: string;
  seq: number;
}

/** A presence frame from the gateway (`joined`/`left`), or `sync` built from `welcome`. */
export interface PresenceChange {
  type: "presence";
  channel: string;
  action: "joined" | "left" | "sync";
  count: number;
  sub?: string;
  name?: string | null;
  role?: string | null;
  /** `sync` only: the members listed by `welcome`. */
  presence?: Member[];
}

export interface Presence {
  /** Distinct users connected. */
  count: number;
  /** Who they are, as far as known (welcome lists at most 100), sorted by sub. */
  members: Member[];
  /** True when `members` lists all `count` users. */
  complete: boolean;
}

export interface ErrorFrame {
  type: "error";
  code: string;
  message: string;
}

export interface ConnectOptions<T = unknown> {
  /** The channel to follow, e.g. `orders:venue-1`. */
  channel: string;
  /** Returns a fresh token from your backend; called before every connect and refresh. */
  getToken: () => string | Promise<string>;
  /** The gateway's origin (`https://…` or `wss://…`). Default: where this module was loaded from. */
  url?: string;
  onEvent?: (event: FoyerEvent<T>) => void;
  onState?: (state: State, reason: string, detail: StateDetail) => void;
  /** The gap since the last seen event is no longer held: reload state from your backend. */
  onReset?: (reset: Reset) => void;
  onPresence?: (change: PresenceChange, presence: Presence | null) => void;
  onWelcome?: (welcome: Welcome) => void;
  onError?: (error: ErrorFrame) => void;
  /** A new deployment (4426, or a `welcome.build` other than `build`). Default: reload the page. */
  onNewVersion?: (build: string | null) => void;
  /** Resume after this seq (e.g. the seq your backend rendered the page at). Default: null. */
  since?: number | null;
  /** The build id to send (`build=`). Default: `<meta name="foyer-build">`, or none. */
  build?: string | null;
  /** Backoff bound of the first retry; doubles per consecutive failure. Default 500. */
  minBackoffMs?: number;
  /** Cap of the backoff bound. Default 30000. */
  maxBackoffMs?: number;
  /** Added to the backoff after a 4429. Default 10000. */
  rateLimitedMs?: number;
  /** Interval of liveness pings on an open socket. Default 25000. */
  pingEveryMs?: number;
  /** No frame within this after a ping: the socket is dead. Default 10000. */
  pongTimeoutMs?: number;
  /** No `welcome` within this after opening: the attempt failed. Default 10000. */
  connectTimeoutMs?: number;
  /** A connection up this long resets the failure count. Default 5000. */
  minUptimeMs?: number;
  /** React to the browser's online/offline and visibility events. Default true. */
  watchNetwork?: boolean;
  /** Source of the jitter, in [0, 1). Default Math.random. */
  random?: () => number;
}

export interface Client {
  readonly state: State;
  readonly reason: string;
  readonly code: number | null;
  readonly attempt: number;
  readonly retryInMs: number | null;
  /** The seq of the last event delivered (or of the last reset). */
  readonly lastSeq: number | null;
  /** Chat channels: who is connected (null before a welcome with presence). */
  readonly presence: Presence | null;
  /** Sends a chat message; returns its client id, or false when not open. On an inbox
   *  connection, `{ channel: "chat:KEY" }` names the chat it goes to. */
  send(text: string, idOrOptions?: string | SendOptions): string | false;
  /** Closes for good (state `closed`). */
  close(): void;
  /** Starts over at once (also after `closed` or `failed`), resuming with `since`. */
  reconnect(): void;
  /** Checks liveness now: a ping that must be answered within `pongTimeoutMs`. */
  check(): void;
}

export declare function connect<T = unknown>(options: ConnectOptions<T>): Client;

export declare class TokenError extends Error {
  constructor(message: string, options?: { fatal?: boolean; status?: number | null });
  /** True: the client stops (state `failed`). False: retried with backoff. */
  readonly fatal: boolean;
  readonly status: number | null;
}

export interface FetchTokenOptions {
  /** Default `include` (your session cookie goes along; cross-origin needs CORS with credentials). */
  credentials?: RequestCredentials;
  headers?: Record<string, string>;
}

/** Fetches a token: 2xx with a JWT (text, or JSON `{"token"}`) only; redirects are refused. */
export declare function fetchToken(url: string | URL, options?: FetchTokenOptions): Promise<string>;

/** The wait before reconnect attempt `attempt`: full jitter up to min(max, min·2^(attempt−1)). */
export declare function backoffDelay(
  attempt: number,
  options?: { minBackoffMs?: number; maxBackoffMs?: number; random?: () => number },
): number;

/** The build id in `<meta name="foyer-build">`, or null. */
export declare function pageBuild(): string | null;

export interface FragmentOptions {
  /** Origins besides the page's own that `token_url` may name. Default: `<meta name="foyer-token-origins">`. */
  tokenOrigins?: string[];
  /** Default: `same-origin` for the page's own origin, `include` for a listed one. */
  credentials?: RequestCredentials;
}

export interface Fragment {
  /** The fragment's channel, or null (missing, or `error`). */
  channel: string | null;
  /** The fragment's parameters, the token removed. */
  params: URLSearchParams;
  /** The trusted token endpoint, or null. */
  tokenUrl: string | null;
  /** Why the link is refused, or null. */
  error: string | null;
  /** The fragment's token once, then `fetchToken(tokenUrl)`. */
  getToken: () => Promise<string>;
}

/**
 * Reads a page link's fragment (and removes its token from the address bar and history).
 * `token_url` must be the page's origin, a listed one, or (for a page on a loopback address)
 * a loopback one.
 */
export declare function fragment(options?: FragmentOptions): Fragment;
