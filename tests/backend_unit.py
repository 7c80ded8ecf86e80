"""Unit tests of the backend kit (foyer_backend, as installed from ./backend): signatures,
webhook verification, ids, batches, retries against a local stub HTTP server, the async
client, settings, tokens and the Django pieces. Fast, no gateway.

    .venv/bin/python tests/backend_unit.py
"""
import asyncio
import base64
import json
import logging
import os
import socket
import sys
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

import foyer_backend as fb
from foyer_backend import _wire

SECRET = "test-secret"
logging.getLogger("foyer_backend").setLevel(logging.ERROR)  # retries log warnings; keep the output clean


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stub:
    """A local HTTP server answering from a script of (status, body, headers); records requests."""

    def __init__(self, script=(), port=None, default=(200, '{"results": []}', {})):
        self.script, self.default, self.requests = list(script), default, []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def handle_one(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                stub.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
                status, text, headers = stub.script.pop(0) if stub.script else stub.default
                if status == "drop":  # cut the connection without an answer
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if callable(text):
                    text = text(body)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def echo_results(body):
    """What /publish answers: one result per message and channel."""
    msgs = json.loads(body)["messages"]
    return json.dumps({"results": [{"id": m["id"], "channel": c, "seq": 1, "delivered": 0, "duplicate": False}
                                   for m in msgs for c in m["channels"]]})


def settings(port, **kw):
    return fb.Settings(publish_secrets=SECRET, url=f"http://127.0.0.1:{port}", **kw)


class Signatures(unittest.TestCase):
    BODY = b'{"id":"evt-1","channels":["orders:venue-1"],"event":"order.created"}'

    def test_the_header_is_the_gateways_scheme(self):
        # Expected value computed independently: printf '<t>./publish.<body>' | openssl dgst -sha256 -hmac test-secret
        self.assertEqual(fb.sign("/publish", self.BODY, SECRET, t=1795349464),
                         "t=1795349464,v1=dbc582071ed6c79a7826361c877bd77b337c2f0ce677909e59d605febba434a3")

    def test_reads_are_signed_over_path_and_query_with_an_empty_body(self):
        target = _wire.history_target("orders:venue-1", since=5, limit=10)
        self.assertEqual(target, "/channels/orders/venue-1/history?since=5&limit=10")
        self.assertEqual(fb.sign(target, b"", SECRET, t=1795349464),
                         "t=1795349464,v1=0f4a5bfda0d534d79abb42ec13a54f09ef8a7b37336898f1b97ebcb769f7541c")

    def test_verify_accepts_any_secret_several_v1_and_either_hex_case(self):
        now = 1795349464
        h = fb.sign("/hooks/chat", self.BODY, "old", t=now)
        self.assertTrue(fb.verify_signature(h, "/hooks/chat", self.BODY, ["new", "old"], now=now))
        tag = h.split("v1=")[1]
        both = f"t={now},v1={'0' * 64},v1={tag.upper()}"
        self.assertTrue(fb.verify_signature(both, "/hooks/chat", self.BODY, ["old"], now=now))

    def test_verify_refuses_other_path_body_time_secret_and_malformed(self):
        now = 1795349464
        h = fb.sign("/hooks/chat", self.BODY, SECRET, t=now)
        v = lambda header, path="/hooks/chat", body=self.BODY, at=now, secrets=(SECRET,): fb.verify_signature(  # noqa: E731
            header, path, body, list(secrets), now=at)
        self.assertTrue(v(h))
        self.assertFalse(v(h, path="/publish"))
        self.assertFalse(v(h, body=self.BODY.replace(b"venue-1", b"venue-2")))
        self.assertFalse(v(h, secrets=("other",)))
        self.assertFalse(v(h.replace(f"t={now}", f"t={now + 1}")))
        self.assertTrue(v(h, at=now + 300))
        self.assertFalse(v(h, at=now + 301))
        self.assertFalse(v(h, at=now - 301))
        tag = h.split("v1=")[1]
        for bad in [None, "", f"t={now}", f"v1={tag}", f"t=1.5,v1={tag}", f"t=-{now},v1={tag}",
                    f"t={now},t={now},v1={tag}", f"t={now},v1={tag[1:]}"]:
            self.assertFalse(v(bad), bad)
        self.assertFalse(fb.verify_signature(h, "/hooks/chat", self.BODY, [], now=now))


class Webhook(unittest.TestCase):
    BODY = json.dumps({"id": "cust-ann/m1", "channel": "chat:o-1", "seq": 7, "event": "chat.message", "ts": 1,
                       "author": {"sub": "cust-ann", "name": "Ann", "role": "customer"}, "text": "Hi",
                       "client_id": "m1"}).encode()

    def test_a_signed_webhook_gives_its_body(self):
        h = fb.sign("/hooks/chat", self.BODY, "s2")
        msg = fb.verify_webhook(self.BODY, h, "/hooks/chat", secret="s1,s2")
        self.assertEqual(msg["id"], "cust-ann/m1")
        self.assertEqual(msg["author"]["name"], "Ann")

    def test_tampered_stale_or_unsigned_webhooks_raise(self):
        h = fb.sign("/hooks/chat", self.BODY, "s1")
        with self.assertRaises(fb.InvalidSignature):
            fb.verify_webhook(self.BODY.replace(b"Hi", b"Ho"), h, "/hooks/chat", secret="s1")
        with self.assertRaises(fb.InvalidSignature):
            fb.verify_webhook(self.BODY, fb.sign("/hooks/chat", self.BODY, "s1", t=int(time.time()) - 400),
                              "/hooks/chat", secret="s1")
        with self.assertRaises(fb.InvalidSignature):
            fb.verify_webhook(self.BODY, None, "/hooks/chat", secret="s1")
        with self.assertRaises(fb.InvalidSignature):  # no secret configured: never accepted
            fb.verify_webhook(self.BODY, h, "/hooks/chat", settings=fb.Settings())

    def test_the_secret_comes_from_chat_webhook_secret(self):
        s = fb.Settings.from_mapping({"CHAT_WEBHOOK_SECRET": "a, b"})
        self.assertEqual(s.webhook_secret_list(), ["a", "b"])
        fb.verify_webhook(self.BODY, fb.sign("/h", self.BODY, "b"), "/h", settings=s)


class Messages(unittest.TestCase):
    def test_message_fixes_its_id_when_built(self):
        m = fb.message("order.created", "orders:v1", {"n": 1})
        self.assertTrue(m["id"].startswith("evt-"))
        self.assertEqual(m["channels"], ["orders:v1"])
        self.assertEqual(fb.fix_ids([m])[0]["id"], m["id"])

    def test_an_id_given_by_the_kit_is_written_into_the_callers_dict(self):
        m = {"channels": ["orders:v1"], "event": "e"}
        first = fb.fix_ids([m])[0]["id"]
        self.assertEqual(m["id"], first)
        self.assertEqual(fb.fix_ids(m)[0]["id"], first)

    def test_invalid_messages_fail_before_any_request(self):
        for bad in [{"channels": [], "event": "e"}, {"channels": ["nope"], "event": "e"},
                    {"channels": ["orders:a b"], "event": "e"}, {"channels": "orders:v", "event": "e"},
                    {"channels": ["orders:v"], "event": ""}, {"id": "x" * 129, "channels": ["orders:v"], "event": "e"},
                    {"channels": [f"orders:v{i}" for i in range(101)], "event": "e"},
                    {"channels": ["orders:v"], "event": "e", "data": "x" * 70_000}]:
            with self.assertRaises(ValueError, msg=str(bad)[:80]):
                fb.fix_ids([bad])
        with self.assertRaises(ValueError):
            fb.fix_ids([{"id": "a", "channels": ["orders:v"], "event": "e"}] * 2)


class Batches(unittest.TestCase):
    def test_at_most_100_messages_a_request_in_order(self):
        msgs = fb.fix_ids([fb.message("e", "orders:v", {"n": i}) for i in range(250)])
        parts = fb.batches(msgs)
        self.assertEqual([len(p) for p in parts], [100, 100, 50])
        self.assertEqual([m["data"]["n"] for p in parts for m in p], list(range(250)))

    def test_at_most_100_distinct_channels_a_request(self):
        msgs = fb.fix_ids([fb.message("e", [f"payment:o{i}", "orders:v"]) for i in range(120)])
        parts = fb.batches(msgs)
        for p in parts:
            self.assertLessEqual(len({c for m in p for c in m["channels"]}), 100)
        self.assertEqual(sum(len(p) for p in parts), 120)
        wide = fb.fix_ids([fb.message("e", [f"chat:r{j}-{i}" for j in range(60)]) for i in range(3)])
        self.assertEqual([len(p) for p in fb.batches(wide)], [1, 1, 1])
        one = fb.fix_ids([fb.message("e", [f"chat:r{j}" for j in range(100)])])
        self.assertEqual([len(p) for p in fb.batches(one)], [1])

    def test_large_bodies_are_split_under_the_size_limit(self):
        msgs = fb.fix_ids([fb.message("e", "orders:v", "x" * 60_000) for _ in range(10)])
        parts = fb.batches(msgs)
        self.assertGreater(len(parts), 1)
        for p in parts:
            self.assertLess(len(_wire.publish_body(p)), 256 * 1024)

    def test_publish_sends_each_batch_and_joins_the_results(self):
        stub = Stub(default=(200, echo_results, {}))
        try:
            msgs = [fb.message("e", "orders:v", {"n": i}) for i in range(230)]
            r = fb.publish(msgs, settings=settings(stub.port))
            self.assertEqual(len(stub.requests), 3)
            self.assertEqual([x["id"] for x in r["results"]], [m["id"] for m in msgs])
            for req in stub.requests:
                self.assertEqual(req["path"], "/publish")
                self.assertLessEqual(len(json.loads(req["body"])["messages"]), 100)
        finally:
            stub.close()


class Retries(unittest.TestCase):
    def test_5xx_and_429_are_retried_with_the_same_body_and_signature(self):
        stub = Stub([(503, '{"error":"unavailable"}', {}), (500, '{"error":"internal"}', {}),
                     (429, '{"error":"rate_limited"}', {"Retry-After": "0"}), (200, echo_results, {})])
        try:
            m = {"channels": ["orders:v"], "event": "order.created", "data": {"n": 1}}
            r = fb.publish(m, settings=settings(stub.port), retry_for=20)
            self.assertEqual(len(stub.requests), 4)
            self.assertEqual(len({req["body"] for req in stub.requests}), 1, "the same body every time")
            self.assertEqual(len({req["headers"]["X-Foyer-Signature"] for req in stub.requests}), 1)
            self.assertEqual(r["results"][0]["id"], m["id"])
            # A caller's retry of the same message object reuses the id fixed the first time.
            fb.publish(m, settings=settings(stub.port))
            self.assertEqual(json.loads(stub.requests[-1]["body"])["messages"][0]["id"], m["id"])
        finally:
            stub.close()

    def test_a_dropped_connection_is_retried(self):
        stub = Stub([("drop", "", {}), (200, echo_results, {})])
        try:
            fb.publish(fb.message("e", "orders:v"), settings=settings(stub.port), retry_for=10)
            self.assertEqual(len(stub.requests), 2)
        finally:
            stub.close()

    def test_other_4xx_fail_at_once_with_the_gateways_code(self):
        stub = Stub([(400, '{"error":"bad_request","message":"no"}', {})])
        try:
            with self.assertRaises(fb.FoyerError) as e:
                fb.publish(fb.message("e", "orders:v"), settings=settings(stub.port), retry_for=10)
            self.assertEqual((e.exception.status, e.exception.code), (400, "bad_request"))
            self.assertEqual(len(stub.requests), 1)
        finally:
            stub.close()

    def test_a_gateway_that_stays_down_fails_within_the_bounded_time(self):
        port = free_port()  # nothing listens
        t0 = time.monotonic()
        with self.assertRaises(fb.FoyerError):
            fb.publish(fb.message("e", "orders:v"), settings=settings(port), retry_for=1.5)
        self.assertLess(time.monotonic() - t0, 3.0)

    def test_a_gateway_back_within_the_window_gets_the_message_once(self):
        port = free_port()
        holder = {}
        threading.Timer(1.0, lambda: holder.setdefault("stub", Stub(default=(200, echo_results, {}), port=port))).start()
        try:
            r = fb.publish(fb.message("e", "orders:v", id="once"), settings=settings(port), retry_for=15)
            self.assertEqual(r["results"][0]["id"], "once")
            self.assertEqual(len(holder["stub"].requests), 1)
        finally:
            time.sleep(0.1)
            if "stub" in holder:
                holder["stub"].close()

    def test_backoff_is_exponential_capped_and_jittered(self):
        lows = [_wire.backoff(n, rng=lambda: 0.0) for n in range(1, 10)]
        highs = [_wire.backoff(n, rng=lambda: 1.0) for n in range(1, 10)]
        self.assertEqual(highs[:4], [0.25, 0.5, 1.0, 2.0])
        self.assertEqual(max(highs), 5.0)
        self.assertEqual(lows[:2], [0.125, 0.25])
        samples = {round(_wire.backoff(3), 6) for _ in range(20)}
        self.assertGreater(len(samples), 1)
        self.assertTrue(all(0.5 <= x <= 1.0 for x in samples))

    def test_the_retry_window_is_capped_within_the_signature_window(self):
        self.assertEqual(_wire.clamp_retry_for(10_000, 30), _wire.MAX_RETRY_FOR)
        self.assertLess(_wire.MAX_RETRY_FOR, 300)

    def test_revoke_retries_keep_the_first_signature(self):
        stub = Stub([(502, "", {}), (200, '{"closed": 2}', {})])
        try:
            self.assertEqual(fb.revoke("cust-7", ["chat:o-1"], settings=settings(stub.port), retry_for=10), {"closed": 2})
            sigs = [r["headers"]["X-Foyer-Signature"] for r in stub.requests]
            self.assertEqual((len(sigs), len(set(sigs))), (2, 1))
            self.assertEqual(json.loads(stub.requests[0]["body"]), {"sub": "cust-7", "channels": ["chat:o-1"]})
        finally:
            stub.close()


class Reads(unittest.TestCase):
    def test_channel_info_and_history_are_signed_gets_over_path_and_query(self):
        stub = Stub([(200, '{"channel":"orders:v1","seq":4,"sockets":0,"users":[],"truncated":false}', {}),
                     (200, '{"channel":"orders:v1","seq":4,"reset":false,"events":[]}', {})])
        try:
            s = settings(stub.port)
            self.assertEqual(fb.channel_info("orders:v1", settings=s)["seq"], 4)
            self.assertEqual(fb.history("orders:v1", since=2, limit=50, settings=s)["events"], [])
            (a, b) = stub.requests
            self.assertEqual((a["method"], a["path"]), ("GET", "/channels/orders/v1"))
            self.assertEqual((b["method"], b["path"]), ("GET", "/channels/orders/v1/history?since=2&limit=50"))
            for req in (a, b):
                self.assertEqual(req["body"], b"")
                self.assertTrue(fb.verify_signature(req["headers"]["X-Foyer-Signature"], req["path"], b"", [SECRET]))
        finally:
            stub.close()

    def test_bad_channel_names_and_limits_fail_before_any_request(self):
        for bad in ["orders", "rooms:x", "orders:", "orders:a/b", "orders:" + "x" * 65]:
            with self.assertRaises(ValueError):
                fb.channel_info(bad, settings=settings(1))
        with self.assertRaises(ValueError):
            fb.history("orders:v", limit=1001, settings=settings(1))


class Async(unittest.TestCase):
    def test_the_async_client_retries_and_reads(self):
        from foyer_backend.aio import AsyncClient

        stub = Stub([(503, "", {}), ("drop", "", {}), (200, echo_results, {}),
                     (200, '{"channel":"chat:r","seq":0,"sockets":0,"users":[],"truncated":false}', {})])

        async def go():
            async with AsyncClient(settings(stub.port)) as foyer:
                m = fb.message("e", "chat:r")
                r = await foyer.publish(m, retry_for=10)
                info = await foyer.channel_info("chat:r")
                return m, r, info

        try:
            m, r, info = asyncio.run(go())
            self.assertEqual(r["results"][0]["id"], m["id"])
            self.assertEqual(len({req["body"] for req in stub.requests[:3]}), 1)
            self.assertEqual(info["seq"], 0)
            self.assertEqual(stub.requests[3]["path"], "/channels/chat/r")
        finally:
            stub.close()


class SettingsAndTokens(unittest.TestCase):
    HS = {"kty": "oct", "alg": "HS256", "kid": "hs", "k": base64.urlsafe_b64encode(b"k" * 32).rstrip(b"=").decode()}

    def test_jwt_keys_as_json_string_dict_jwks_or_single_jwk(self):
        for value in [json.dumps({"keys": [self.HS]}), {"keys": [self.HS]}, self.HS, json.dumps(self.HS)]:
            s = fb.Settings.from_mapping({"JWT_KEYS": value, "JWT_ISSUER": "iss"})
            tok = fb.mint_token("u1", ["orders:v"], ["chat:r"], name="Ann", role="staff", ttl=60, settings=s)
            claims = jwt.decode(tok, b"k" * 32, algorithms=["HS256"], audience="foyer", issuer="iss")
            self.assertEqual((claims["sub"], claims["channels"], claims["publish"], claims["name"], claims["role"]),
                             ("u1", ["orders:v"], ["chat:r"], "Ann", "staff"))
            self.assertEqual(claims["exp"] - claims["iat"], 60)
            self.assertEqual(jwt.get_unverified_header(tok)["kid"], "hs")

    def test_ed25519_pair_signs_with_the_private_and_verifies_with_the_public(self):
        private, public = fb.generate_ed25519("k1")
        self.assertNotIn("d", public["keys"][0])
        self.assertEqual(fb.public_jwks(private), public)
        tok = fb.mint_token("u", ["chat:r"], settings=fb.Settings(jwt_keys=private, issuer="i"))
        key = jwt.PyJWK.from_dict(public["keys"][0]).key
        self.assertEqual(jwt.decode(tok, key, algorithms=["EdDSA"], audience="foyer")["sub"], "u")

    def test_ttl_above_the_gateways_maximum_and_oversized_subs_are_refused(self):
        s = fb.Settings(jwt_keys=self.HS, issuer="i", max_lifetime=900)
        with self.assertRaises(ValueError):
            fb.mint_token("u", ["orders:v"], ttl=901, settings=s)
        with self.assertRaises(ValueError):
            fb.mint_token("u" * 300, ["orders:v"], settings=s)
        with self.assertRaises(ValueError):
            fb.mint_token("u", ["orders:v"], settings=fb.Settings(jwt_keys=fb.public_jwks(fb.generate_ed25519()[0]), issuer="i"))

    def test_environment_settings(self):
        s = fb.Settings.from_env({"FOYER_URL": "https://gw.example/", "PUBLISH_SECRETS": "new,old", "FOYER_RETRY_FOR": "5"})
        self.assertEqual((s.url, s.publish_secret(), s.retry_for, s.audience), ("https://gw.example", "new", 5.0, "foyer"))


class DjangoPieces(unittest.TestCase):
    port = None

    @classmethod
    def setUpClass(cls):
        import django
        from django.conf import settings as dj

        cls.stub = Stub(default=(200, echo_results, {}))
        if not dj.configured:
            dj.configure(
                SECRET_KEY="unit-test-secret-key", ALLOWED_HOSTS=["*"], USE_TZ=True,
                DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
                INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions",
                                "foyer_backend.django"],
                SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
                CHAT_WEBHOOK_SECRET="hook-secret", PUBLISH_SECRETS=SECRET, FOYER_URL=f"http://127.0.0.1:{cls.stub.port}",
                JWT_KEYS={"keys": [SettingsAndTokens.HS]}, JWT_ISSUER="iss",
                FOYER_GRANTS="backend_unit.sample_grants", ROOT_URLCONF="backend_unit",
            )
            django.setup()

    @classmethod
    def tearDownClass(cls):
        cls.stub.close()

    def request(self, method="post", body=b"", **headers):
        from django.test import RequestFactory

        return getattr(RequestFactory(), method)("/hooks/chat", data=body, content_type="application/json", headers=headers)

    def test_the_webhook_decorator_runs_the_view_only_for_a_valid_signature(self):
        from foyer_backend.django import foyer_webhook

        seen = []

        @foyer_webhook
        def hook(request):
            from django.http import HttpResponse

            seen.append(request.foyer_message)
            return HttpResponse(status=204)

        body = Webhook.BODY
        ok = hook(self.request(body=body, X_Foyer_Signature=fb.sign("/hooks/chat", body, "hook-secret")))
        self.assertEqual(ok.status_code, 204)
        self.assertEqual(seen[0]["id"], "cust-ann/m1")
        tampered = hook(self.request(body=body.replace(b"Hi", b"Ho"),
                                     X_Foyer_Signature=fb.sign("/hooks/chat", body, "hook-secret")))
        self.assertEqual(tampered.status_code, 403)
        self.assertEqual(hook(self.request(body=body)).status_code, 403)
        self.assertEqual(hook(self.request(method="get")).status_code, 405)
        self.assertEqual(len(seen), 1)

    def test_the_settings_read_a_dict_jwt_keys_from_django(self):
        from foyer_backend.django import foyer_settings

        s = foyer_settings()
        self.assertEqual(s.signing_key()[2], "hs")
        self.assertEqual(s.webhook_secret_list(), ["hook-secret"])

    def test_guest_sub_is_derived_from_the_session_never_its_key(self):
        from django.contrib.sessions.backends.db import SessionStore
        from django.test import RequestFactory

        from foyer_backend.django import guest_sub

        r1, r2 = RequestFactory().get("/"), RequestFactory().get("/")
        r1.session, r2.session = SessionStore(), SessionStore()
        from django.core.management import call_command

        call_command("migrate", "sessions", verbosity=0)
        a, again, b = guest_sub(r1), guest_sub(r1), guest_sub(r2)
        self.assertEqual(a, again)
        self.assertNotEqual(a, b)
        self.assertTrue(a.startswith("guest-"))
        self.assertNotIn(r1.session.session_key, a)
        r1.session.cycle_key()  # e.g. at login
        self.assertEqual(guest_sub(r1), a)

    def test_the_token_view_mints_what_the_hook_grants(self):
        from django.contrib.auth.models import AnonymousUser
        from django.test import RequestFactory

        from foyer_backend.django.views import token

        req = RequestFactory().get("/foyer/token")
        req.user = AnonymousUser()
        self.assertEqual(token(req).status_code, 403)
        req = RequestFactory().get("/foyer/token?grant=1")
        resp = token(req)
        self.assertEqual(resp.status_code, 200)
        self.assertIn("no-store", resp["Cache-Control"])
        claims = jwt.decode(resp.content, b"k" * 32, algorithms=["HS256"], audience="foyer")
        self.assertEqual((claims["sub"], claims["channels"], claims["exp"] - claims["iat"]), ("u-1", ["chat:r1"], 300))

    def test_publish_on_commit_publishes_after_commit_and_never_after_rollback(self):
        from django.db import transaction

        from foyer_backend.django import flush, publish_on_commit

        before = len(self.stub.requests)
        try:
            with transaction.atomic():
                publish_on_commit(fb.message("order.created", "orders:v", id="rolled-back"))
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        with transaction.atomic():
            m = publish_on_commit({"channels": ["orders:v"], "event": "order.created"})[0]
            self.assertTrue(m["id"])
            self.assertTrue(flush(5))
            self.assertEqual(len(self.stub.requests), before, "nothing leaves before the commit")
        self.assertTrue(flush(5))
        sent = [json.loads(r["body"])["messages"][0]["id"] for r in self.stub.requests[before:]]
        self.assertEqual(sent, [m["id"]])

    def test_a_failed_publish_on_commit_is_logged_never_raised(self):
        from django.db import transaction
        from django.test import override_settings

        from foyer_backend.django import flush, publish_on_commit

        with override_settings(FOYER_URL=f"http://127.0.0.1:{free_port()}", FOYER_RETRY_FOR=0.3):
            with self.assertLogs("foyer_backend", level="ERROR") as logs:
                with transaction.atomic():
                    publish_on_commit(fb.message("e", "orders:v", id="lost-1"))
                self.assertTrue(flush(10))
                with transaction.atomic():  # inline: still never raised into the request
                    publish_on_commit(fb.message("e", "orders:v", id="lost-2"), background=False)
        self.assertIn("lost-1", "\n".join(logs.output))
        self.assertIn("lost-2", "\n".join(logs.output))


def sample_grants(request):
    from foyer_backend.django import Grant

    return Grant("u-1", ["chat:r1"]) if request.GET.get("grant") else None


urlpatterns = []


def main():
    sys.modules.setdefault("backend_unit", sys.modules[__name__])
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    sys.exit(0 if result.wasSuccessful() and result.testsRun else 1)


if __name__ == "__main__":
    main()
