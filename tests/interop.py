"""Interop: only third-party clients (PyJWT, cryptography, websockets) against a real
`wrangler dev`, plus the repo's Python backend kit (installed from ./backend) for signing
publishes. Run with the repo's virtualenv: .venv/bin/python tests/interop.py"""
import asyncio, base64, json, os, secrets, signal, socket, subprocess, sys, tempfile, time, urllib.request

import jwt
import websockets
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
try:
    import foyer_backend as fb  # the kit as installed by scripts/setup: pip install ./backend
except ImportError:
    raise SystemExit("foyer_backend is not installed: run scripts/setup, then .venv/bin/python tests/interop.py")

b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail and not ok else ""), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


hs_secret = secrets.token_bytes(32)
ed_key = ed25519.Ed25519PrivateKey.generate()
es_key = ec.generate_private_key(ec.SECP256R1())
es_pub = es_key.public_key().public_numbers()
jwks = {"keys": [
    {"kty": "oct", "alg": "HS256", "kid": "hs", "k": b64(hs_secret)},
    {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "ed",
     "x": b64(ed_key.public_key().public_bytes_raw())},
    {"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "es",
     "x": b64(es_pub.x.to_bytes(32, "big")), "y": b64(es_pub.y.to_bytes(32, "big"))},
]}
ISSUER, SECRET = "interop-backend", secrets.token_hex(16)
settings = fb.Settings(jwt_keys=json.dumps(jwks), issuer=ISSUER, publish_secrets=SECRET)


def token(key, alg, kid, channels, sub="py-user"):
    now = int(time.time())
    claims = {"sub": sub, "iss": ISSUER, "aud": "foyer", "iat": now, "exp": now + 300, "channels": channels}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


async def first_frame(url, tok):
    """The first frame as JSON, or ('closed', code)."""
    try:
        async with websockets.connect(url, subprotocols=["foyer.v1", "bearer." + tok], open_timeout=20) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))
    except websockets.ConnectionClosed as e:
        return ("closed", e.rcvd.code if e.rcvd else None)


async def main(base):
    settings.url = base
    ws = base.replace("http", "ws", 1)
    for alg, key, kid in [("HS256", hs_secret, "hs"), ("EdDSA", ed_key, "ed"), ("ES256", es_key, "es")]:
        f = await first_frame(f"{ws}/ws/orders/v1", token(key, alg, kid, ["orders:v1"]))
        check(f"PyJWT {alg} token is accepted", isinstance(f, dict) and f.get("type") == "welcome", f)
    other_ed = ed25519.Ed25519PrivateKey.generate()
    other_es = ec.generate_private_key(ec.SECP256R1())
    for name, tok in [("EdDSA token from another key", token(other_ed, "EdDSA", "ed", ["orders:v1"])),
                      ("ES256 token from another key", token(other_es, "ES256", "es", ["orders:v1"])),
                      ("HS256 token with another secret", token(secrets.token_bytes(32), "HS256", "hs", ["orders:v1"])),
                      ("EdDSA token under the ES256 kid", token(ed_key, "EdDSA", "es", ["orders:v1"]))]:
        f = await first_frame(f"{ws}/ws/orders/v1", tok)
        check(f"{name} is refused with 4401", f == ("closed", 4401), f)
    f = await first_frame(f"{ws}/ws/orders/v2", token(hs_secret, "HS256", "hs", ["orders:v1"]))
    check("a valid token for another channel gets 4403", f == ("closed", 4403), f)
    f = await first_frame(f"{ws}/ws/orders/v1", fb.mint_token("kit", ["orders:v1"], settings=settings))
    check("the backend kit's mint_token is accepted", isinstance(f, dict) and f.get("type") == "welcome", f)

    # Publishes signed by the kit arrive in order on a websockets client.
    venue = "interop-" + secrets.token_hex(4)
    tok = token(ed_key, "EdDSA", "ed", [f"orders:{venue}"])
    async with websockets.connect(f"{ws}/ws/orders/{venue}", subprotocols=["foyer.v1", "bearer." + tok]) as sock:
        check("the server selects foyer.v1 and never echoes the token", sock.subprotocol == "foyer.v1", sock.subprotocol)
        await sock.recv()
        events = [{"id": f"{venue}-{i}", "channels": [f"orders:{venue}"], "event": "order.created", "data": {"n": i}}
                  for i in range(30)]
        r = fb.publish(events[:10], settings=settings)
        check("a publish signed by the kit is accepted", [x["seq"] for x in r["results"]] == list(range(1, 11)), r)
        for e in events[10:]:
            fb.publish([e], settings=settings)
        seqs = []
        while len(seqs) < 30:
            frame = json.loads(await asyncio.wait_for(sock.recv(), 10))
            if frame["type"] == "event":
                seqs.append(frame["seq"])
        check("the websockets client receives the events in exact seq order", seqs == list(range(1, 31)), seqs)
    body = json.dumps(events[0]).encode()
    header = fb.sign("/publish", body, SECRET)
    tampered = body.replace(b'"n": 0', b'"n": 9')
    req = urllib.request.Request(base + "/publish", tampered, {"Content-Type": "application/json", "X-Foyer-Signature": header})
    try:
        urllib.request.urlopen(req)
        status = 200
    except urllib.error.HTTPError as e:
        status = e.code
    check("a tampered body under the kit's signature gets 401", status == 401, status)


def run():
    port, tmp = free_port(), tempfile.mkdtemp(prefix="foyer-interop-")
    env_file = os.path.join(tmp, "env")
    with open(env_file, "w") as f:
        f.write(f"JWT_KEYS='{json.dumps(jwks)}'\nJWT_ISSUER='{ISSUER}'\nPUBLISH_SECRETS='{SECRET}'\n")
    log = os.path.join(tmp, "wrangler.log")
    # scripts/gateway: wrangler dev with the project's Node; `ready URL` once /healthz answers.
    proc = subprocess.Popen(
        [os.path.join(ROOT, "scripts", "gateway"), "--port", str(port), "--vars", env_file, "--persist", os.path.join(tmp, "state"),
         "--log", log, "--watch", str(os.getpid())],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        ready = proc.stdout.readline().startswith("ready ")
        proc.stdout.close()
        if not ready:
            raise SystemExit("wrangler dev did not start; see " + log)
        asyncio.run(main(base))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if results and all(results) else 1)


if __name__ == "__main__":
    run()
