// The gateway's own EdDSA and ES256 checks (src/edge/hot.js: node:crypto, native) timed in
// the runtime that runs them, for `scripts/bench --micro`. GET / answers µs per verification:
// the gateway's, and the runtime's own with nothing around it.
import { es256_der, public_key, verify_signature } from "../../src/edge/hot.js";

const c = globalThis.process.getBuiltinModule("node:crypto");
const raw = (alg, publicKey) => {
  const jwk = publicKey.export({ format: "jwk" });
  const bytes = (b64) => Uint8Array.from(atob(b64.replace(/-/g, "+").replace(/_/g, "/")), (ch) => ch.charCodeAt(0));
  return alg === "EdDSA" ? bytes(jwk.x) : new Uint8Array([4, ...bytes(jwk.x), ...bytes(jwk.y)]);
};

// The median of 7 batches of `f`, µs per call, as on the host. Batches of 2,000: the
// runtime's clock steps by a millisecond, so a batch must run for tens of them.
function median(f) {
  const n = 2000;
  const batches = [];
  for (let b = 0; b < 7; b++) {
    const start = performance.now();
    for (let i = 0; i < n; i++) f();
    batches.push(((performance.now() - start) * 1000) / n);
  }
  return batches.sort((x, y) => x - y)[3];
}

// The gateway's check, and beside it the runtime's own verification with nothing around
// it (the key object built once, an ES256 signature already in DER): the floor of this
// machine, which no gateway code can go below.
function time(alg, type, options, hash) {
  const { publicKey, privateKey } = c.generateKeyPairSync(type, options);
  const key = public_key(alg, raw(alg, publicKey));
  // A token's signing input is its two first segments: about 300 bytes for a typical token.
  const signed = new TextEncoder().encode("e".repeat(300));
  const pkcs8 = privateKey.export({ format: "jwk" });
  const signature = new Uint8Array(c.sign(hash, signed, { key: pkcs8, format: "jwk", dsaEncoding: "ieee-p1363" }));
  const der = alg === "ES256" ? es256_der(signature) : signature;
  for (let i = 0; i < 200; i++) {
    if (!verify_signature(alg, key, signed, signature) || !c.verify(hash, signed, key, der)) throw new Error(`${alg} failed`);
  }
  return { gateway: median(() => verify_signature(alg, key, signed, signature)), runtime: median(() => c.verify(hash, signed, key, der)) };
}

export default {
  fetch(request) {
    if (new URL(request.url).pathname === "/healthz") return new Response("ok");
    return Response.json({
      EdDSA: time("EdDSA", "ed25519", {}, null),
      ES256: time("ES256", "ec", { namedCurve: "P-256" }, "sha256"),
    });
  },
};
