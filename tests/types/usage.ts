// How a page uses @foyer/client, checked by `tsc -p tests/types` (scripts/test). The
// lines marked ts-expect-error are misuses the declarations must reject: if the types grew too
// loose, tsc fails on the unused directive.
import { backoffDelay, connect, fetchToken, fragment, pageBuild, TokenError, VERSION } from "@foyer/client";
import type { ChatMessageData, Client, EventSource, FoyerEvent, Member, Presence, State, StateDetail, Welcome } from "@foyer/client";

interface OrderData {
  order: string;
  seat?: string;
  status: string;
}

function render(e: FoyerEvent<OrderData>): void {
  const seat: string | undefined = e.data.seat;
  console.log(e.seq, e.event, e.data.order, seat, e.ts);
}

const live: Client = connect<OrderData>({
  channel: "orders:venue-1",
  url: "https://foyer.example.com",
  getToken: () => fetchToken("/api/foyer-token", { credentials: "include" }),
  onEvent: render,
  onState: (state: State, reason: string, detail: StateDetail) => {
    if (state === "reconnecting" && detail.retryInMs !== null) console.log(`retry in ${detail.retryInMs} ms: ${reason}`);
    if (state === "failed" && detail.code === 4403) console.log("not allowed");
  },
  onReset: (reset) => console.log("reload from the backend, then continue after", reset.seq),
  onWelcome: (w: Welcome) => console.log(w.build, w.expires_at),
  onNewVersion: (build) => { if (build === null) location.reload(); },
  since: 42,
  build: pageBuild(),
  pingEveryMs: 25_000,
  pongTimeoutMs: 10_000,
  minBackoffMs: 500,
  maxBackoffMs: 30_000,
  rateLimitedMs: 10_000,
  connectTimeoutMs: 10_000,
  minUptimeMs: 5_000,
  watchNetwork: true,
  random: Math.random,
});

const chat = connect<ChatMessageData>({
  channel: "chat:o-1001",
  getToken: async () => "header.payload.signature",
  onEvent: (e) => console.log(e.data.author.name ?? e.data.author.sub, e.data.text),
  onPresence: (change, presence: Presence | null) => {
    if (change.action === "sync") console.log("from welcome:", change.presence?.length);
    const names: string[] = presence?.members.map((m: Member) => m.name ?? m.sub) ?? [];
    console.log(names, presence?.count, presence?.complete);
  },
  onError: (e) => console.log(e.code, e.message),
});
const sent: string | false = chat.send("Two teas to B12, please");
const seq: number | null = live.lastSeq;

// A staff inbox: events carry their source; a send names the chat it answers.
const inbox = connect<ChatMessageData>({
  channel: "inbox:venue-1",
  getToken: async () => "header.payload.signature",
  onEvent: (e) => {
    const from: EventSource | undefined = e.source;
    if (from) inbox.send("On its way", { channel: from.channel, id: `re-${from.seq}` });
  },
});
const reply: string | false = inbox.send("Table 4, two minutes", { channel: "chat:o-1001" });
console.log(reply);
const state: State = live.state;
live.check();
live.reconnect();
live.close();
console.log(sent, seq, state, VERSION, backoffDelay(3, { minBackoffMs: 500, maxBackoffMs: 30_000 }));

const link = fragment({ tokenOrigins: ["https://app.example.com"] });
if (link.channel && !link.error) connect({ channel: link.channel, getToken: link.getToken });

async function token(): Promise<string> {
  try {
    return await fetchToken(new URL("/api/foyer-token", location.href));
  } catch (e) {
    if (e instanceof TokenError && e.fatal) throw new TokenError(`log in again (${e.status})`, { fatal: true });
    throw e;
  }
}
console.log(token);

// @ts-expect-error: the channel is required
connect({ getToken: () => "t" });
// @ts-expect-error: getToken returns a token string
connect({ channel: "orders:v", getToken: () => 42 });
// @ts-expect-error: misspelt options are caught
connect({ channel: "orders:v", getToken: () => "t", pingEvery: 1000 });
// @ts-expect-error: the states are a closed set
const dead: State = "dead";
// @ts-expect-error: lastSeq is read-only
live.lastSeq = 3;
// @ts-expect-error: event data is typed by the page
connect<OrderData>({ channel: "orders:v", getToken: () => "t", onEvent: (e) => e.data.price.toFixed() });
console.log(dead);
// @ts-expect-error: a send's options name a channel as a string
inbox.send("hi", { channel: 7 });
