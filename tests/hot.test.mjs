// Unit tests of the shell's JavaScript hot paths (src/edge/hot.js), with plain objects in
// place of the runtime's: each function's contract, including the failure cases the Rust
// side relies on (a closed socket not counted, a body over the cap cut off, a non-200
// object answer thrown). The paths also run end to end in every integration test.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as hot from "../src/edge/hot.js";

const socket = (readyState = 1, fails = false) => ({
  readyState,
  sent: [],
  send(frame) {
    if (fails) throw new Error("closed");
    this.sent.push(frame);
  },
});

const state = (tagged) => ({
  getWebSockets: (tag) => (tag === undefined ? Object.values(tagged).flat() : tagged[tag] ?? []),
});

test("send_all sends the same frame to every socket and counts only those that took it", () => {
  const open = [socket(), socket()];
  const closed = socket(3, true);
  assert.equal(hot.send_all([open[0], closed, open[1]], "{\"seq\":1}"), 2);
  assert.deepEqual(open.map((s) => s.sent), [["{\"seq\":1}"], ["{\"seq\":1}"]]);
  assert.equal(hot.send_all([], "x"), 0);
});

test("sockets, count_tagged and count_open read the runtime's lists, count_open skipping closing sockets and the leaving one", () => {
  const s = state({ "sub:ann": [socket(), socket(2)], "sub:bob": [socket()] });
  assert.equal(hot.sockets(s).length, 3);
  assert.equal(hot.count_tagged(s, "sub:ann"), 2);
  assert.equal(hot.count_tagged(s, "sub:nobody"), 0);
  assert.equal(hot.count_open(s, "sub:ann"), 1, "CLOSING is not open");
  assert.equal(hot.count_open(s, ""), 2, "\"\" means every socket");
  const bob = s.getWebSockets("sub:bob")[0];
  assert.equal(hot.count_open(s, "sub:bob", bob), 0, "the leaving socket is not counted, even while OPEN");
  assert.equal(hot.count_open(s, "", bob), 1);
});

const chunked = (sizes) =>
  new Request("https://x/publish", {
    method: "POST",
    duplex: "half",
    body: new ReadableStream({
      start(controller) {
        for (const n of sizes) controller.enqueue(new Uint8Array(n).fill(97));
        controller.close();
      },
    }),
  });

test("read_capped returns the whole body up to the cap and null past it, while it arrives", async () => {
  assert.deepEqual(await hot.read_capped(chunked([3, 4]), 7), new Uint8Array(7).fill(97));
  assert.equal(await hot.read_capped(chunked([4, 4]), 7), null);
  assert.deepEqual(await hot.read_capped(new Request("https://x/"), 7), new Uint8Array(0), "no body");
  const declared = (n) => new Request("https://x/", { method: "POST", body: "a".repeat(n), headers: { "Content-Length": String(n) } });
  assert.deepEqual(await hot.read_capped(declared(7), 7), new Uint8Array(7).fill(97), "a declared length within the cap: read whole");
  assert.equal(await hot.read_capped(declared(8), 7), null, "a declared length over the cap: read as it arrives, cut off");
  // A body that never ends is cut off once the cap is passed, not awaited.
  const endless = new Request("https://x/publish", {
    method: "POST",
    duplex: "half",
    body: new ReadableStream({ pull: (c) => c.enqueue(new Uint8Array(1024)) }),
  });
  assert.equal(await hot.read_capped(endless, 4096), null);
});

const namespace = (answer, seen) => ({
  idFromName: (name) => `id:${name}`,
  get: (id) => ({
    fetch: async (url, init) => {
      seen.push({ id, url, init });
      return typeof answer === "function" ? answer(url, init) : answer;
    },
  }),
});

test("post addresses the object by name and path, and throws on any status but 200", async () => {
  const seen = [];
  const env = { ROOMS: namespace(new Response("{\"ok\":1}"), seen) };
  assert.equal(await hot.post(env, "ROOMS", "orders:v1", "/publish", "{}"), "{\"ok\":1}");
  assert.deepEqual(seen[0], { id: "id:orders:v1", url: `${hot.OBJECT_ORIGIN}/publish`, init: { method: "POST", body: "{}" } });
  const failing = { ROOMS: namespace(new Response("no", { status: 500 }), []) };
  await assert.rejects(hot.post(failing, "ROOMS", "orders:v1", "/publish", "{}"), /answered 500 on \/publish/);
});

test("call_method calls the named method of the object named, with the text, and returns its answer", async () => {
  const seen = [];
  const env = {
    ORDERS: {
      idFromName: (name) => `id:${name}`,
      get: (id) => ({ publish: async (body) => (seen.push({ id, body }), "{\"results\":[]}") }),
    },
  };
  assert.equal(await hot.call_method(env, "ORDERS", "orders:v1", "publish", "{}"), "{\"results\":[]}");
  assert.deepEqual(seen, [{ id: "id:orders:v1", body: "{}" }]);
  const failing = { ORDERS: { idFromName: (n) => n, get: () => ({ publish: async () => { throw new Error("room down"); } }) } };
  await assert.rejects(hot.call_method(failing, "ORDERS", "orders:v1", "publish", "{}"), /room down/);
});

test("post within a bound fails a call not answered in time, and answers one that is", async () => {
  const never = { ROOMS: namespace(() => new Promise(() => {}), []) };
  const started = Date.now();
  await assert.rejects(hot.post(never, "ROOMS", "orders:v1", "/revoke", "{}", 50), /no answer on \/revoke within 50 ms/);
  assert.ok(Date.now() - started < 1000);
  const quick = { ROOMS: namespace(new Response("{\"closed\":1}"), []) };
  assert.equal(await hot.post(quick, "ROOMS", "orders:v1", "/revoke", "{}", 50), "{\"closed\":1}");
});

test("open_socket hands the ticket to the room's /connect as an upgrade", async () => {
  const seen = [];
  const env = { PAYMENT: namespace("the room's 101", seen) };
  assert.equal(await hot.open_socket(env, "PAYMENT", "payment:o-1", "X-Foyer-Ticket", "abc"), "the room's 101");
  assert.equal(seen[0].url, `${hot.OBJECT_ORIGIN}/connect`);
  assert.deepEqual(seen[0].init.headers, { Upgrade: "websocket", "X-Foyer-Ticket": "abc" });
});

test("handshake_headers reads the four handshake headers in one string, an absent one as NUL", () => {
  const request = { headers: new Headers({ Upgrade: "websocket", "Sec-WebSocket-Protocol": "foyer.v1, bearer.x" }) };
  assert.equal(hot.handshake_headers(request), "websocket\n\0\nfoyer.v1, bearer.x\n\0");
  const all = new Headers({ Upgrade: "WebSocket", Origin: "https://a.example", "Sec-WebSocket-Protocol": "", "CF-Connecting-IP": "203.0.113.7" });
  assert.equal(hot.handshake_headers({ headers: all }), "WebSocket\nhttps://a.example\n\n203.0.113.7");
});

test("open_socket answers 500 when the room cannot be reached (the Worker does not await it)", async (t) => {
  const logged = t.mock.method(console, "error", () => {});
  const env = { PAYMENT: namespace(() => Promise.reject(new Error("room down")), []) };
  const answer = await hot.open_socket(env, "PAYMENT", "payment:o-1", "X-Foyer-Ticket", "abc");
  assert.equal(answer.status, 500);
  assert.equal(await answer.text(), "INTERNAL SERVER ERROR");
  assert.match(logged.mock.calls[0].arguments[0], /room down/);
});

test("refuse accepts, closes with the code, and selects the subprotocol only when asked; upgraded hands a socket over", () => {
  const closed = [];
  globalThis.WebSocketPair = function () {
    return { 0: "client", 1: { accept() {}, close: (code, reason) => closed.push([code, reason]) } };
  };
  const RealResponse = globalThis.Response;
  // Node's Response refuses status 101; the runtime's takes it with a socket.
  globalThis.Response = function (body, init) {
    return { body, ...init };
  };
  try {
    const r = hot.refuse(4401, "token revoked", "foyer.v1");
    assert.deepEqual(closed, [[4401, "token revoked"]]);
    assert.deepEqual(r, { body: null, status: 101, webSocket: "client", headers: { "Sec-WebSocket-Protocol": "foyer.v1" } });
    assert.deepEqual(hot.refuse(4403, "x", "").headers, {});
    assert.deepEqual(hot.upgraded("room's client", ""), { body: null, status: 101, webSocket: "room's client", headers: {} });
  } finally {
    globalThis.Response = RealResponse;
    delete globalThis.WebSocketPair;
  }
});

test("json_text answers the text as is, as JSON, with the status", async () => {
  const r = hot.json_text('{"closed":2}', 200);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("Content-Type"), "application/json");
  assert.equal(await r.text(), '{"closed":2}');
  assert.equal(hot.json_text("{}", 500).status, 500);
});

// Token signatures: the same checks the Worker makes through node:crypto (nodejs_compat).
import { generateKeyPairSync, sign } from "node:crypto";

const rawPublic = (alg, publicKey) => {
  const jwk = publicKey.export({ format: "jwk" });
  const bytes = (b64) => Buffer.from(b64, "base64url");
  return alg === "EdDSA" ? new Uint8Array(bytes(jwk.x)) : new Uint8Array([4, ...bytes(jwk.x), ...bytes(jwk.y)]);
};

for (const [alg, type, options, hash] of [
  ["EdDSA", "ed25519", {}, null],
  ["ES256", "ec", { namedCurve: "P-256" }, "sha256"],
]) {
  test(`${alg}: a JWS signature verifies; a flipped bit, a wrong length or another key does not`, () => {
    const { publicKey, privateKey } = generateKeyPairSync(type, options);
    const other = generateKeyPairSync(type, options).publicKey;
    const key = hot.public_key(alg, rawPublic(alg, publicKey));
    const otherKey = hot.public_key(alg, rawPublic(alg, other));
    assert.ok(key && otherKey);
    const signed = new TextEncoder().encode("eyJhbGciOi.eyJzdWIiOiJ1In0");
    const signature = new Uint8Array(sign(hash, signed, { key: privateKey, dsaEncoding: "ieee-p1363" }));
    assert.equal(signature.length, 64);
    assert.equal(hot.verify_signature(alg, key, signed, signature), true);
    for (let i = 0; i < 64; i += 7) {
      const flipped = signature.slice();
      flipped[i] ^= 1;
      assert.equal(hot.verify_signature(alg, key, signed, flipped), false, `byte ${i}`);
    }
    const tampered = signed.slice();
    tampered[0] ^= 1;
    assert.equal(hot.verify_signature(alg, key, tampered, signature), false);
    assert.equal(hot.verify_signature(alg, otherKey, signed, signature), false);
    assert.equal(hot.verify_signature(alg, key, signed, signature.subarray(0, 63)), false);
    assert.equal(hot.verify_signature(alg, key, signed, new Uint8Array(64)), false);
    assert.equal(hot.verify_signature(alg === "EdDSA" ? "ES256" : "EdDSA", key, signed, signature), false);
  });
}

test("public_key refuses what is not a public key of the algorithm", () => {
  assert.equal(hot.public_key("EdDSA", new Uint8Array(31)), null);
  assert.equal(hot.public_key("ES256", new Uint8Array(65)), null, "no leading 4");
  const offCurve = new Uint8Array(65).fill(1);
  offCurve[0] = 4;
  assert.equal(hot.public_key("ES256", offCurve), null, "not on the curve");
  assert.equal(hot.public_key("RS256", new Uint8Array(32)), null);
});

test("es256_der writes minimal INTEGERs, with a zero byte before a set top bit", () => {
  const rs = new Uint8Array(64);
  rs[31] = 1; // r = 1
  rs[32] = 0x80; // s with its top bit set
  const der = hot.es256_der(rs);
  assert.deepEqual([...der.subarray(0, 5)], [0x30, 3 + 35, 0x02, 1, 1]);
  assert.deepEqual([...der.subarray(5, 9)], [0x02, 33, 0, 0x80]);
  assert.equal(der.length, 2 + 3 + 35);
});

test("metric writes one data point to METRICS when it is bound, and nothing (and no error) otherwise", () => {
  const points = [];
  hot.metric({ METRICS: { writeDataPoint: (p) => points.push(p) } }, "venue-1", ["connect", "orders"], new Float64Array([1, 12.5]));
  assert.deepEqual(points, [{ indexes: ["venue-1"], blobs: ["connect", "orders"], doubles: [1, 12.5] }]);
  assert.doesNotThrow(() => hot.metric({}, "v", ["x"], [1]));
  assert.doesNotThrow(() => hot.metric({ METRICS: { writeDataPoint: () => { throw new Error("quota"); } } }, "v", ["x"], [1]));
});
