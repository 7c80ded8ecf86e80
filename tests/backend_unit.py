"""Unit tests of the backend kit (foyer_backend, as installed from ./backend): signatures,
webhook verification, ids, batches, retries against a local stub HTTP server, the async
client, settings, tokens and the Django pieces. Fast, no gateway.

    .venv/bin/python tests/backend_unit.py
"""
import asyncio
import base64
import io
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import unittest
import unittest.mock
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


class SettingsInOnePlace(unittest.TestCase):
    def test_foyer_keys_and_the_environments_names_both_read(self):
        a = fb.Settings.from_mapping({"URL": "https://gw.example/", "PUBLISH_SECRETS": ["new", "old"], "RETRY_FOR": 5,
                                      "TIMEOUT": "2", "GRANTS": "x.y", "TOKEN_TTL": 60})
        self.assertEqual((a.url, a.publish_secret(), a.retry_for, a.timeout, a.grants, a.token_ttl),
                         ("https://gw.example", "new", 5.0, 2.0, "x.y", 60))
        b = fb.Settings.from_env({"FOYER_URL": "https://gw.example", "FOYER_RETRY_FOR": "5"})
        self.assertEqual((b.url, b.retry_for), ("https://gw.example", 5.0))

    def test_a_secret_without_a_url_is_an_error_never_a_silent_localhost(self):
        s = fb.Settings.from_env({"PUBLISH_SECRETS": "s"})
        with self.assertRaisesRegex(ValueError, r"URL is not set.*FOYER\['URL'\]"):
            fb.publish(fb.message("e", "orders:v"), settings=s)
        with self.assertRaisesRegex(ValueError, "URL is not set"):
            fb.revoke("u", settings=s)
        with self.assertRaisesRegex(ValueError, "URL"):
            fb.publish(fb.message("e", "orders:v"), settings=fb.Settings(publish_secrets="s"))
        # Local tools reading .dev.vars ask for wrangler dev's address explicitly.
        self.assertEqual(fb.Settings.from_mapping({}).url, "http://127.0.0.1:8787")

    def test_a_non_numeric_number_names_its_setting(self):
        with self.assertRaisesRegex(ValueError, "RETRY_FOR must be a number"):
            fb.Settings.from_mapping({"RETRY_FOR": "soon"})


class SmallerItems(unittest.TestCase):
    def test_unicode_digits_or_a_non_ascii_v1_are_refusals_not_exceptions(self):
        body, now = b"{}", 1795349464
        good = fb.sign("/h", body, SECRET, t=now).split("v1=")[1]
        for header in [f"t=\u00b2,v1={good}", f"t=\u0661\u0662,v1={good}", f"t={now},v1=\u00e9{good[1:]}",
                       f"t={now},v1={good[:-1]}\u0663", f"t=\uff11{now},v1={good}"]:
            self.assertFalse(fb.verify_signature(header, "/h", body, [SECRET], now=now), header)
            with self.assertRaises(fb.InvalidSignature):
                fb.verify_webhook(body, header, "/h", secret=SECRET, now=now)

    def test_a_channel_string_where_a_list_is_due_is_refused(self):
        s = fb.Settings(jwt_keys=SettingsAndTokens.HS, issuer="i")
        with self.assertRaisesRegex(TypeError, "not a string"):
            fb.mint_token("u", "orders:v1", settings=s)
        with self.assertRaisesRegex(TypeError, "not a string"):
            fb.mint_token("u", ["chat:r"], publish="chat:r", settings=s)
        with self.assertRaises(ValueError):
            fb.mint_token("u", ["orders:bad name"], settings=s)

    def test_revoke_never_sends_an_empty_channel_list(self):
        stub = Stub(default=(200, '{"closed": 0}', {}))
        try:
            with self.assertRaisesRegex(ValueError, r"channels=\[\].*None"):
                fb.revoke("cust-7", [], settings=settings(stub.port))
            with self.assertRaisesRegex(ValueError, r"channels=\[\]"):
                fb.revoke("cust-7", iter(()), settings=settings(stub.port))
            self.assertEqual(stub.requests, [])
            fb.revoke("cust-7", settings=settings(stub.port))
            self.assertEqual(json.loads(stub.requests[0]["body"]), {"sub": "cust-7"}, "every channel: no channels key")
            with self.assertRaises(ValueError):
                fb.revoke("cust-7", [f"chat:r{i}" for i in range(101)], settings=settings(stub.port))
        finally:
            stub.close()


def link_results(body):
    """What /links answers: one result per entry, in order."""
    return json.dumps({"results": [{"channel": e["channel"], "inbox": e["inbox"], "linked": not e.get("remove")}
                                   for e in json.loads(body)["links"]]})


class Links(unittest.TestCase):
    def test_link_and_unlink_are_signed_posts_to_links(self):
        stub = Stub(default=(200, link_results, {}))
        try:
            s = settings(stub.port)
            self.assertEqual(fb.link("chat:o-1001", "inbox:venue-1", settings=s),
                             {"channel": "chat:o-1001", "inbox": "inbox:venue-1", "linked": True})
            self.assertEqual(fb.unlink("chat:o-1001", "inbox:venue-1", settings=s)["linked"], False)
            a, b = stub.requests
            self.assertEqual((a["method"], a["path"], a["headers"]["Content-Type"]), ("POST", "/links", "application/json"))
            self.assertEqual(json.loads(a["body"]), {"links": [{"channel": "chat:o-1001", "inbox": "inbox:venue-1"}]})
            self.assertEqual(json.loads(b["body"]), {"links": [{"channel": "chat:o-1001", "inbox": "inbox:venue-1", "remove": True}]})
            for req in (a, b):
                self.assertTrue(fb.verify_signature(req["headers"]["X-Foyer-Signature"], "/links", req["body"], [SECRET]))
                self.assertFalse(fb.verify_signature(req["headers"]["X-Foyer-Signature"], "/publish", req["body"], [SECRET]))
        finally:
            stub.close()

    def test_the_batch_form_keeps_order_and_splits_at_100(self):
        stub = Stub(default=(200, link_results, {}))
        try:
            entries = [(f"chat:o-{i}", "inbox:v") for i in range(150)] + [{"channel": "orders:v", "inbox": "inbox:v", "remove": True}]
            r = fb.links(entries, settings=settings(stub.port))
            self.assertEqual([len(json.loads(q["body"])["links"]) for q in stub.requests], [100, 51])
            self.assertEqual([x["channel"] for x in r["results"]], [f"chat:o-{i}" for i in range(150)] + ["orders:v"])
            self.assertEqual(r["results"][-1]["linked"], False)
        finally:
            stub.close()

    def test_links_are_retried_like_publish(self):
        stub = Stub([(503, "", {}), ("drop", "", {}), (200, link_results, {})])
        try:
            fb.links([("chat:o-1", "inbox:v")], settings=settings(stub.port), retry_for=10)
            self.assertEqual(len(stub.requests), 3)
            self.assertEqual(len({(q["body"], q["headers"]["X-Foyer-Signature"]) for q in stub.requests}), 1)
        finally:
            stub.close()

    def test_a_partial_failure_keeps_the_results_that_landed(self):
        stub = Stub([(200, link_results, {}), (400, '{"error":"bad_request"}', {})])
        try:
            with self.assertRaises(fb.FoyerError) as e:
                fb.links([(f"chat:o-{i}", "inbox:v") for i in range(120)], settings=settings(stub.port))
            self.assertEqual(len(e.exception.results), 100)
        finally:
            stub.close()

    def test_bad_links_fail_before_any_request(self):
        for bad in [[("inbox:a", "inbox:b")], [("chat:o-1", "orders:v")], [("chat:o 1", "inbox:v")], [("chat:o-1",)],
                    [{"channel": "chat:o-1", "inbox": "inbox:v", "remove": "yes"}],
                    [{"channel": "chat:o-1", "inbox": "inbox:v", "extra": 1}], [], [("chat:o-1", None)]]:
            with self.assertRaises((ValueError, TypeError), msg=repr(bad)):
                fb.links(bad, settings=settings(1))

    def test_the_async_client_links(self):
        from foyer_backend.aio import AsyncClient

        stub = Stub([(502, "", {}), (200, link_results, {}), (200, link_results, {})])

        async def go():
            async with AsyncClient(settings(stub.port)) as foyer:
                return (await foyer.link("chat:o-1", "inbox:v", retry_for=10),
                        await foyer.unlink("chat:o-1", "inbox:v"))

        try:
            linked, unlinked = asyncio.run(go())
            self.assertEqual((linked["linked"], unlinked["linked"]), (True, False))
            self.assertEqual([q["path"] for q in stub.requests], ["/links"] * 3)
        finally:
            stub.close()


class OutboxRules(unittest.TestCase):
    """The outbox core (foyer_backend._outbox): no database, no network."""

    from datetime import datetime as _dt, timedelta as _td
    T0 = _dt(2026, 1, 1, 12, 0, 0)

    def row(self, pk, kind="publish", due_in=None, attempts=0, body=None):
        from foyer_backend import _outbox as core

        if body is None:
            body = json.dumps({"id": f"m{pk}", "channels": ["orders:v"], "event": "e"}) if kind == "publish" else \
                json.dumps([{"channel": f"chat:o-{pk}", "inbox": "inbox:v"}])
        nt = None if due_in is None else self.T0 + self._td(seconds=due_in)
        return core.Row(pk, kind, body, attempts, nt)

    def test_the_due_prefix_goes_in_write_order_and_a_waiting_row_holds_those_behind_it(self):
        from foyer_backend import _outbox as core

        cases = [  # (rows as (pk, due_in), expected pks, expected next due in s)
            ([(1, -1), (2, 0), (3, -5)], [1, 2, 3], None),
            ([(2, -1), (1, -1)], [1, 2], None),
            ([(1, -1), (2, 10), (3, -1)], [1], 10),
            ([(1, 5), (2, -1)], [], 5),
            ([], [], None),
        ]
        for rows, pks, nxt in cases:
            got, next_due = core.due([self.row(pk, due_in=d) for pk, d in rows], self.T0)
            self.assertEqual([r.pk for r in got], pks, rows)
            self.assertEqual(next_due, None if nxt is None else self.T0 + self._td(seconds=nxt), rows)
        got, next_due = core.due([self.row(1, due_in=50), self.row(2, due_in=-1)], self.T0, everything=True)
        self.assertEqual(([r.pk for r in got], next_due), ([1, 2], None))

    def test_rows_become_requests_by_runs_of_one_kind_within_the_limits(self):
        from foyer_backend import _outbox as core

        rows = [self.row(1), self.row(2), self.row(3, "links"), self.row(4)]
        reqs = core.requests(rows)
        self.assertEqual([(q.path, [r.pk for r in q.rows]) for q in reqs],
                         [("/publish", [1, 2]), ("/links", [3]), ("/publish", [4])])
        self.assertEqual([m["id"] for m in json.loads(reqs[0].body)["messages"]], ["m1", "m2"])
        many = core.requests([self.row(i) for i in range(1, 251)])
        self.assertEqual([len(q.rows) for q in many], [100, 100, 50])
        big = [self.row(i, "links", body=json.dumps([{"channel": f"chat:o-{i}-{j}", "inbox": "inbox:v"} for j in range(60)]))
               for i in range(3)]
        self.assertEqual([len(json.loads(q.body)["links"]) for q in core.requests(big)], [60, 60, 60])

    def test_what_a_failure_means(self):
        from foyer_backend import _outbox as core

        cases = [  # (error, rows in the request, verdict)
            (None, 3, core.SENT),
            (fb.FoyerError("x", status=400), 3, core.SPLIT),
            (fb.FoyerError("x", status=400), 1, core.DEAD),
            (fb.FoyerError("x", status=413), 1, core.DEAD),
            (fb.FoyerError("x", status=404), 1, core.DEAD),  # /links on a gateway older than v1.2
            (fb.FoyerError("x", status=404), 2, core.SPLIT),
            (fb.FoyerError("x", status=401), 1, core.RETRY),  # a secret being rotated: not the row's fault
            (fb.FoyerError("x", status=503), 2, core.RETRY),
            (fb.FoyerError("refused"), 1, core.RETRY),  # network
            (ValueError("the gateway's URL is not set"), 1, core.RETRY),  # configuration, fixed later
        ]
        for error, n, verdict in cases:
            self.assertEqual(core.outcome(error, n), verdict, (error, n))

    def test_the_retry_schedule_doubles_to_five_minutes_with_jitter(self):
        from foyer_backend import _outbox as core

        secs = lambda n, x: (core.retry_at(n, self.T0, rng=lambda: x) - self.T0).total_seconds()  # noqa: E731
        self.assertEqual([secs(n, 1.0) for n in (1, 2, 3, 4)], [1, 2, 4, 8])
        self.assertEqual(secs(30, 1.0), 300)
        self.assertEqual(secs(1, 0.0), 0.5)


# --- Django ------------------------------------------------------------------------------

DJANGO = {}  # the stub gateway and the base FOYER dict, once Django is configured


def django_setup():
    """Django configured once for every Django test: a SQLite file (the sender thread has its
    own connection), the kit's migrations applied, FOYER pointing at a stub gateway."""
    if DJANGO:
        return DJANGO
    import tempfile

    import django
    from django.conf import settings as dj
    from django.core.management import call_command

    def answer(body):
        return echo_results(body) if b'"messages"' in body else link_results(body) if b'"links"' in body else '{"closed": 0}'

    stub = Stub(default=(200, answer, {}))
    base = {"URL": f"http://127.0.0.1:{stub.port}", "PUBLISH_SECRETS": [SECRET], "CHAT_WEBHOOK_SECRET": "hook-secret",
            "JWT_KEYS": {"keys": [SettingsAndTokens.HS]}, "JWT_ISSUER": "iss", "GRANTS": "backend_unit.sample_grants"}
    db = os.path.join(tempfile.mkdtemp(prefix="foyer-unit-"), "db.sqlite3")
    dj.configure(
        SECRET_KEY="unit-test-secret-key", ALLOWED_HOSTS=["*"], USE_TZ=True,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db, "OPTIONS": {"timeout": 20},
                               "TEST": {"NAME": db + ".test"}}},
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions",
                        "foyer_backend.django"],
        SESSION_ENGINE="django.contrib.sessions.backends.db",
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
        FOYER=base, ROOT_URLCONF="backend_unit",
    )
    django.setup()
    call_command("migrate", verbosity=0)
    DJANGO.update(stub=stub, base=base, db=db)
    return DJANGO


def foyer(**changes):
    """override_settings(FOYER=<the base dict with changes>); a value None removes the key."""
    from django.test import override_settings

    d = dict(DJANGO["base"], **changes)
    return override_settings(FOYER={k: v for k, v in d.items() if v is not None})


def rows():
    from foyer_backend.django.models import OutboxEntry

    return list(OutboxEntry.objects.order_by("pk"))


def sent_ids(requests):
    return [m["id"] for r in requests if r["path"] == "/publish" for m in json.loads(r["body"])["messages"]]


class DjangoCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dj = django_setup()
        cls.stub = cls.dj["stub"]

    def setUp(self):
        from foyer_backend.django import flush
        from foyer_backend.django.models import OutboxEntry

        OutboxEntry.objects.all().delete()
        flush(5)
        self.stub.script = []
        self.mark = len(self.stub.requests)

    def new_requests(self):
        return self.stub.requests[self.mark:]


class DjangoPieces(DjangoCase):
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
        # Unicode digits in t, or a non-ASCII v1: 403, not a 500.
        t = int(time.time())
        tag = fb.sign("/hooks/chat", body, "hook-secret", t=t).split("v1=")[1]
        for header in [f"t=\u00b2\u00b3,v1={tag}", f"t={t},v1=\u00e9{tag[1:]}"]:
            self.assertEqual(hook(self.request(body=body, X_Foyer_Signature=header)).status_code, 403, header)
        self.assertEqual(len(seen), 1)

    def test_the_settings_come_from_the_foyer_dict(self):
        from foyer_backend.django import foyer_settings

        s = foyer_settings()
        self.assertEqual(s.signing_key()[2], "hs")
        self.assertEqual((s.webhook_secret_list(), s.publish_secret(), s.url),
                         (["hook-secret"], SECRET, self.dj["base"]["URL"]))
        self.assertEqual(fb.Settings.default(), s, "every function of the kit reads it inside Django")

    def test_revoke_and_the_other_calls_read_django_settings_without_settings_arg(self):
        os.environ.pop("PUBLISH_SECRETS", None)
        fb.revoke("cust-7", ["chat:o-1"])
        fb.link("chat:o-1", "inbox:v")
        paths = [r["path"] for r in self.new_requests()]
        self.assertEqual(paths, ["/revoke", "/links"])
        self.assertTrue(fb.verify_signature(self.new_requests()[0]["headers"]["X-Foyer-Signature"], "/revoke",
                                            self.new_requests()[0]["body"], [SECRET]))

    def test_the_old_top_level_names_still_work_with_a_deprecation_warning(self):
        import warnings

        from django.test import override_settings

        from foyer_backend import _settings

        _settings._warned.clear()
        with override_settings(FOYER=None, FOYER_URL=self.dj["base"]["URL"], PUBLISH_SECRETS="old-style",
                               JWT_KEYS=json.dumps(SettingsAndTokens.HS), JWT_ISSUER="old-iss",
                               FOYER_GRANTS="backend_unit.sample_grants", FOYER_TOKEN_TTL=120,
                               FOYER_PUBLISH_BACKGROUND=False):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                s = fb.Settings.default()
            self.assertEqual((s.url, s.publish_secret(), s.grants, s.token_ttl, s.send),
                             (self.dj["base"]["URL"], "old-style", "backend_unit.sample_grants", 120, "inline"))
            self.assertTrue(any(issubclass(c.category, DeprecationWarning) and "FOYER_URL" in str(c.message)
                                and "'URL'" in str(c.message) for c in caught), [str(c.message) for c in caught])
            from django.core.checks import run_checks

            ids = {m.id for m in run_checks(tags=["foyer"])}
            self.assertIn("foyer.W001", ids)
            self.assertFalse({i for i in ids if i.startswith("foyer.E")}, ids)

    def test_guest_sub_is_derived_from_the_session_never_its_key(self):
        from django.contrib.sessions.backends.db import SessionStore
        from django.test import RequestFactory

        from foyer_backend.django import guest_sub

        r1, r2 = RequestFactory().get("/"), RequestFactory().get("/")
        r1.session, r2.session = SessionStore(), SessionStore()
        self.assertIsNone(guest_sub(r1, create=False))
        self.assertIsNone(r1.session.session_key, "a grants hook asking creates no session")
        a, again, b = guest_sub(r1), guest_sub(r1), guest_sub(r2)
        self.assertEqual(a, again)
        self.assertEqual(guest_sub(r1, create=False), a)
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
        with foyer(TOKEN_TTL=60):
            claims = jwt.decode(token(RequestFactory().get("/foyer/token?grant=1")).content, b"k" * 32,
                                algorithms=["HS256"], audience="foyer")
            self.assertEqual(claims["exp"] - claims["iat"], 60)

    def test_a_grants_hook_result_that_is_not_a_grant_gets_a_clear_error(self):
        from django.core.exceptions import ImproperlyConfigured
        from django.test import RequestFactory

        from foyer_backend.django import Grant
        from foyer_backend.django.views import token

        with foyer(GRANTS="backend_unit.dict_grants"):
            with self.assertRaisesRegex(ImproperlyConfigured, "returned dict.*Grant"):
                token(RequestFactory().get("/foyer/token"))
        with foyer(GRANTS="backend_unit.no_such_hook"):
            with self.assertRaisesRegex(ImproperlyConfigured, "does not import"):
                token(RequestFactory().get("/foyer/token"))
        with self.assertRaisesRegex(TypeError, "not a string"):
            Grant("u", channels="orders:v1")
        with self.assertRaisesRegex(TypeError, "not a string"):
            Grant("u", ["chat:r"], publish="chat:r")
        with self.assertRaisesRegex(ValueError, "not a channel name"):
            Grant("u", ["orders:v 1"])
        with self.assertRaises(TypeError):
            Grant("", ["orders:v1"])

    def test_the_staff_grant_gives_the_inbox_and_publish_for_the_venues_chats(self):
        from foyer_backend.django import staff_grant

        g = staff_grant("staff-7", "venue-1", ["chat:o-1", "chat:o-2"], channels=["orders:venue-1"], name="Sam")
        self.assertEqual((g.sub, g.channels, g.publish, g.name, g.role),
                         ("staff-7", ["inbox:venue-1", "orders:venue-1"], ["chat:o-1", "chat:o-2"], "Sam", "staff"))
        tok = fb.mint_token(g.sub, g.channels, g.publish, g.name, g.role, settings=fb.Settings.default())
        self.assertEqual(jwt.decode(tok, b"k" * 32, algorithms=["HS256"], audience="foyer")["channels"][0], "inbox:venue-1")
        for bad in [dict(chats=["orders:venue-1"]), dict(chats="chat:o-1"), dict(venue="venue 1")]:
            with self.assertRaises((ValueError, TypeError), msg=bad):
                staff_grant("s", **dict(dict(venue="venue-1", chats=[]), **bad))


class SystemChecks(DjangoCase):
    def ids(self):
        from django.core.checks import run_checks

        return sorted(m.id for m in run_checks(tags=["foyer"]))

    def test_a_complete_foyer_dict_passes(self):
        self.assertEqual(self.ids(), [])

    def test_each_misconfiguration_fails_manage_py_check_with_its_id(self):
        from django.test import override_settings

        public = fb.public_jwks(fb.generate_ed25519("k")[0])
        cases = [  # (FOYER changes, the check that fails)
            (dict(URL=None), "foyer.E002"),
            (dict(URL="127.0.0.1:8787"), "foyer.E002"),
            (dict(URL="ftp://gw.example"), "foyer.E002"),
            (dict(URL="https://gw.example:99999"), "foyer.E002"),
            (dict(URL="https://gw.example/?x=1"), "foyer.E002"),
            (dict(PUBLISH_SECRETS=None), "foyer.E003"),
            (dict(PUBLISH_SECRETS=[]), "foyer.E003"),
            (dict(JWT_KEYS=None), "foyer.E004"),
            (dict(JWT_KEYS=public), "foyer.E004"),  # only the public key: cannot sign
            (dict(JWT_KEYS="{not json"), "foyer.E004"),
            (dict(JWT_ISSUER=""), "foyer.E005"),
            (dict(JWT_ISSUER=None), "foyer.E005"),
            (dict(GRANTS=None), "foyer.E006"),
            (dict(GRANTS="backend_unit.no_such_hook"), "foyer.E006"),
            (dict(GRANTS="no_such_module.grants"), "foyer.E006"),
            (dict(TOKEN_TTL=3600), "foyer.E007"),
            (dict(RETRY_FOR="soon"), "foyer.E007"),
            (dict(SEND="later"), "foyer.E008"),
            (dict(TYPO_KEY=1), "foyer.W002"),
        ]
        for changes, check_id in cases:
            with foyer(**changes):
                self.assertEqual(self.ids(), [check_id], changes)
        with override_settings(FOYER=None):
            self.assertEqual(self.ids(), ["foyer.E001"])
        with override_settings(FOYER="https://gw.example"):
            self.assertEqual(self.ids(), ["foyer.E001"])

    def test_manage_py_check_exits_non_zero(self):
        from django.core.management import call_command
        from django.core.management.base import SystemCheckError

        with foyer(GRANTS="backend_unit.no_such_hook"):
            with self.assertRaisesRegex(SystemCheckError, "foyer.E006"):
                call_command("check", stdout=open(os.devnull, "w"))


class Outbox(DjangoCase):
    def test_publish_on_commit_serializes_django_types_at_the_call(self):
        import datetime
        import decimal
        import uuid as uuidlib

        from django.db import transaction
        from django.utils.translation import gettext_lazy

        from foyer_backend.django import flush, publish_on_commit

        when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        u = uuidlib.UUID("12345678-1234-5678-1234-567812345678")
        with transaction.atomic():
            m = publish_on_commit(fb.message("order.paid", "orders:v", {"total": decimal.Decimal("12.50"), "at": when,
                                                                           "ref": u, "label": gettext_lazy("Paid")}))[0]
            (row,) = rows()  # written in the transaction
            self.assertEqual((row.kind, row.key), ("publish", m["id"]))
            self.assertEqual(json.loads(row.body)["data"],
                             {"total": "12.50", "at": "2026-01-02T03:04:05Z", "ref": str(u), "label": "Paid"})
            self.assertEqual(self.new_requests(), [], "nothing leaves before the commit")
        self.assertTrue(flush(10))
        self.assertEqual(sent_ids(self.new_requests()), [m["id"]])
        self.assertEqual(rows(), [], "deleted once the gateway accepted it")

    def test_a_programming_error_raises_in_the_callers_transaction(self):
        from django.db import transaction

        from foyer_backend.django import publish_on_commit

        for bad, error in [(fb.message("e", "orders:venue 1"), ValueError),
                           (fb.message("e", "orders:v", {"x": object()}), TypeError),
                           (fb.message("e", "orders:v", "x" * 70_000), ValueError)]:
            with self.assertRaises(error):
                with transaction.atomic():
                    publish_on_commit(bad)
        self.assertEqual(rows(), [])

    def test_a_rolled_back_transaction_leaves_no_row_and_sends_nothing(self):
        from django.db import transaction

        from foyer_backend.django import flush, publish_on_commit

        try:
            with transaction.atomic():
                publish_on_commit(fb.message("order.created", "orders:v", id="rolled-back"))
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        self.assertEqual(rows(), [])
        self.assertTrue(flush(5))
        self.assertEqual(self.new_requests(), [])

    def test_a_failed_send_stays_in_the_outbox_with_its_schedule_and_is_sent_later_with_the_same_id(self):
        from django.db import transaction

        from foyer_backend.django import flush, outbox, publish_on_commit

        down = f"http://127.0.0.1:{free_port()}"
        with foyer(URL=down):
            with self.assertLogs("foyer_backend", level="WARNING") as logs:
                with transaction.atomic():
                    m = publish_on_commit(fb.message("e", "orders:v", id="kept-1"))[0]
                self.assertFalse(flush(1.5), "the gateway is down: the row waits in the database")
        (row,) = rows()
        self.assertEqual(row.key, "kept-1")
        self.assertGreaterEqual(row.attempts, 1)
        self.assertTrue(row.last_error)
        self.assertIn("outbox", "\n".join(logs.output))
        self.assertEqual(outbox.sender._delay is not None, True, "the thread sleeps until the row is due")
        report = outbox.drain(everything=True)  # the gateway is back (the stub): an operator's one-off drain
        self.assertEqual((report.sent, report.pending), (1, 0))
        self.assertEqual(sent_ids(self.new_requests()), [m["id"]])

    def test_the_sender_thread_retries_with_backoff_while_the_process_lives(self):
        from django.db import transaction

        from foyer_backend.django import flush, publish_on_commit

        port = free_port()
        back = None
        try:
            with foyer(URL=f"http://127.0.0.1:{port}"):
                with self.assertLogs("foyer_backend", level="WARNING"):
                    with transaction.atomic():
                        publish_on_commit(fb.message("e", "orders:v", id="comes-back"))
                    time.sleep(0.3)
                self.assertEqual([r.key for r in rows()], ["comes-back"])
                back = Stub(default=(200, echo_results, {}), port=port)  # the gateway is back
                self.assertTrue(flush(15))
            self.assertEqual(sent_ids(back.requests), ["comes-back"])
            self.assertEqual(rows(), [])
        finally:
            if back:
                back.close()

    def test_foyer_outbox_loop_sends_rows_written_while_it_runs_and_stops_on_sigterm(self):
        import signal
        import subprocess

        from django.db import transaction

        from foyer_backend.django import publish_on_commit

        code = LOOP_SCRIPT.format(db=self.dj["db"], url=self.dj["base"]["URL"], secret=SECRET)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        try:
            self.assertIn("until stopped", proc.stdout.readline())
            with foyer(SEND="worker"):
                with transaction.atomic():
                    publish_on_commit(fb.message("e", "orders:v", id="looped"))
            deadline = time.monotonic() + 15
            while "looped" not in sent_ids(self.new_requests()) and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(sent_ids(self.new_requests()), ["looped"])
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 0)
        self.assertIn("stopped", out)
        self.assertEqual(rows(), [])

    def test_a_row_sent_twice_carries_the_same_id_for_the_gateway_to_dedupe(self):
        from django.db import transaction

        from foyer_backend.django import outbox, publish_on_commit

        with foyer(SEND="worker"):
            with transaction.atomic():
                publish_on_commit(fb.message("e", "orders:v", id="twice"))
        body = rows()[0].body
        # A drainer that sent the row and died before deleting it: the row is sent again.
        self.stub.script = [(200, echo_results, {})]
        from foyer_backend.django.models import OutboxEntry

        with unittest.mock.patch.object(OutboxEntry.objects.none().__class__, "delete", lambda self: (0, {})):
            outbox.drain()
        self.assertEqual(len(rows()), 1)
        outbox.drain(everything=True)
        bodies = [json.loads(r["body"])["messages"] for r in self.new_requests()]
        self.assertEqual(bodies, [[json.loads(body)]] * 2)
        self.assertEqual(rows(), [])

    def test_worker_mode_leaves_rows_to_the_command(self):
        from django.core.management import call_command
        from django.db import transaction

        from foyer_backend.django import publish_on_commit

        with foyer(SEND="worker"):
            with transaction.atomic():
                publish_on_commit([fb.message("e", "orders:v", id=f"w-{i}") for i in range(3)])
            time.sleep(0.2)
            self.assertEqual(len(rows()), 3)
            self.assertEqual(self.new_requests(), [])
            out = io.StringIO()
            call_command("foyer_outbox", stdout=out)
        self.assertIn("sent 3, failed 0, dead 0, pending 0", out.getvalue())
        self.assertEqual(sent_ids(self.new_requests()), ["w-0", "w-1", "w-2"])

    def test_the_command_exits_non_zero_when_the_gateway_is_down_and_keeps_the_rows(self):
        from django.core.management import call_command
        from django.db import transaction

        from foyer_backend.django import publish_on_commit

        with foyer(SEND="worker", URL=f"http://127.0.0.1:{free_port()}"):
            with transaction.atomic():
                publish_on_commit(fb.message("e", "orders:v", id="down-1"))
            with self.assertLogs("foyer_backend", level="WARNING"):
                with self.assertRaises(SystemExit) as e:
                    call_command("foyer_outbox", stdout=io.StringIO())
        self.assertEqual(e.exception.code, 1)
        self.assertEqual([r.key for r in rows()], ["down-1"])

    def test_inline_mode_sends_in_the_on_commit_hook_and_never_raises(self):
        from django.db import transaction

        from foyer_backend.django import publish_on_commit

        with foyer(SEND="inline"):
            with transaction.atomic():
                publish_on_commit(fb.message("e", "orders:v", id="inline-1"))
            self.assertEqual(sent_ids(self.new_requests()), ["inline-1"])
        with foyer(SEND="inline", URL=f"http://127.0.0.1:{free_port()}"):
            with self.assertLogs("foyer_backend", level="WARNING"):
                with transaction.atomic():
                    publish_on_commit(fb.message("e", "orders:v", id="inline-2"))
        self.assertEqual([r.key for r in rows()], ["inline-2"])

    def test_a_malformed_row_is_set_aside_and_the_others_are_sent(self):
        from django.db import transaction

        from foyer_backend.django import outbox, publish_on_commit

        def answer(body):
            return echo_results(body)

        with foyer(SEND="worker"):
            with transaction.atomic():
                publish_on_commit([fb.message("e", "orders:v", id=i) for i in ("a", "bad", "c")])
        # The gateway refuses any request holding "bad" (400), accepts the rest.
        self.stub.script = [(400, '{"error":"bad_request"}', {}), (200, answer, {}), (400, '{"error":"bad_request"}', {}),
                            (200, answer, {})]
        with self.assertLogs("foyer_backend", level="ERROR"):
            report = outbox.drain()
        self.assertEqual((report.sent, report.dead, report.pending), (2, 1, 0))
        (dead,) = rows()
        self.assertEqual((dead.key, dead.dead), ("bad", True))
        self.assertEqual(sent_ids(self.new_requests()[1:]), ["a", "bad", "c"])

    def test_a_link_written_before_a_publish_reaches_the_gateway_before_it(self):
        from django.db import transaction

        from foyer_backend.django import flush, link_on_commit, publish_on_commit

        with transaction.atomic():
            link_on_commit([("chat:o-1", "inbox:v"), ("orders:v", "inbox:v")])
            publish_on_commit(fb.message("order.created", ["orders:v", "chat:o-1"], id="o-1-created"))
        self.assertTrue(flush(10))
        reqs = self.new_requests()
        self.assertEqual([r["path"] for r in reqs], ["/links", "/publish"])
        self.assertEqual(json.loads(reqs[0]["body"]), {"links": [{"channel": "chat:o-1", "inbox": "inbox:v"},
                                                                 {"channel": "orders:v", "inbox": "inbox:v"}]})
        with self.assertRaises(ValueError):
            link_on_commit([("chat:o-1", "orders:v")])

    def test_an_outage_holds_nothing_in_memory_and_delays_no_commit(self):
        from django.db import transaction

        from foyer_backend.django import outbox, publish_on_commit

        with foyer(URL=f"http://127.0.0.1:{free_port()}"):
            with self.assertLogs("foyer_backend", level="WARNING"):
                t0 = time.monotonic()
                for i in range(200):
                    with transaction.atomic():
                        publish_on_commit(fb.message("e", "orders:v", id=f"out-{i}"))
                took = time.monotonic() - t0
                outbox.sender.flush(None, 0.5)
        self.assertLess(took, 5.0)
        self.assertEqual(len(rows()), 200, "the rows wait in the database")
        self.assertFalse([k for k in vars(outbox.sender) if isinstance(getattr(outbox.sender, k), (list, dict))],
                         "the sender keeps no queue")

    def test_process_exit_with_the_gateway_down_takes_at_most_2_s(self):
        import subprocess

        # A gateway that accepts connections and never answers: the worst case for a sender.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        code = EXIT_SCRIPT.format(db=self.dj["db"], port=silent.getsockname()[1])
        try:
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                    env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
            line = proc.stdout.readline()
            t0 = time.monotonic()
            proc.wait(timeout=30)
            took = time.monotonic() - t0
        finally:
            silent.close()
        self.assertEqual(line.strip(), "committed")
        self.assertEqual(proc.returncode, 0)
        self.assertLessEqual(took, 2.0)
        self.assertIn("exit-row", [r.key for r in rows()], "the row survived the exit")


EXIT_SCRIPT = """
import django, sys, time
from django.conf import settings
settings.configure(
    SECRET_KEY="x", USE_TZ=True, INSTALLED_APPS=["foyer_backend.django"],
    DATABASES={{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}, "OPTIONS": {{"timeout": 20}}}}}},
    FOYER={{"URL": "http://127.0.0.1:{port}", "PUBLISH_SECRETS": ["s"], "TIMEOUT": 30}})
django.setup()
from django.db import transaction
import foyer_backend as fb
from foyer_backend.django import publish_on_commit
with transaction.atomic():
    publish_on_commit(fb.message("e", "orders:v", id="exit-row"))
time.sleep(0.3)  # the sender thread is now inside its send
print("committed", flush=True)
"""


LOOP_SCRIPT = """
import django
from django.conf import settings
settings.configure(
    SECRET_KEY="x", USE_TZ=True, INSTALLED_APPS=["foyer_backend.django"],
    DATABASES={{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}, "OPTIONS": {{"timeout": 20}}}}}},
    FOYER={{"URL": {url!r}, "PUBLISH_SECRETS": [{secret!r}]}})
django.setup()
from django.core.management import call_command
call_command("foyer_outbox", "--loop", "--interval", "0.1")
"""


class Capture(DjangoCase):
    def test_capture_records_everything_and_sends_nothing(self):
        from django.db import transaction

        from foyer_backend.django import link_on_commit, publish_on_commit
        from foyer_backend.testing import capture

        with capture() as c:
            fb.publish(fb.message("e", "orders:v", {"n": 1}, id="p1"))
            again = fb.publish(fb.message("e", "orders:v", id="p1"))
            fb.link("chat:o-1", "inbox:v")
            fb.revoke("cust-7")
            tok = fb.mint_token("u", ["orders:v"], settings=fb.Settings())  # no key configured: a test key
            with transaction.atomic():
                publish_on_commit(fb.message("order.created", "orders:v", id="committed"))
                link_on_commit([("orders:v", "inbox:v")])
                self.assertEqual(len(c.publishes), 2, "not before the commit")
            try:
                with transaction.atomic():
                    publish_on_commit(fb.message("order.created", "orders:v", id="rolled-back"))
                    raise RuntimeError
            except RuntimeError:
                pass
            info = fb.channel_info("orders:v")
            hist = fb.history("orders:v", since=1)
        self.assertEqual([m["id"] for m in c.publishes], ["p1", "p1", "committed"])
        self.assertTrue(again["results"][0]["duplicate"])
        self.assertEqual([m["id"] for m in c.events("orders:v", "order.created")], ["committed"])
        self.assertEqual(c.links, [{"channel": "chat:o-1", "inbox": "inbox:v"}, {"channel": "orders:v", "inbox": "inbox:v"}])
        self.assertEqual(c.linked("inbox:v"), ["chat:o-1", "orders:v"])
        self.assertEqual(c.revokes, [{"sub": "cust-7"}])
        self.assertEqual((c.tokens[0]["sub"], c.tokens[0]["channels"]), ("u", ["orders:v"]))
        self.assertTrue(tok)
        self.assertEqual((info["seq"], [e["id"] for e in hist["events"]]), (2, ["committed"]))
        self.assertEqual(self.new_requests(), [], "nothing was sent")
        self.assertEqual(rows(), [], "nothing was written to the outbox")

    def test_capture_keeps_validation_and_link_limits(self):
        from foyer_backend.testing import capture

        with capture() as c:
            with self.assertRaises(ValueError):
                fb.publish(fb.message("e", "orders:bad channel"))
            with self.assertRaises(ValueError):
                fb.revoke("u", [])
            results = fb.links([(f"chat:o-{i}", "inbox:v{}".format(j)) for i in range(1) for j in range(9)])["results"]
        self.assertEqual([r.get("error") for r in results], [None] * 8 + ["too_many_links"])
        self.assertEqual(c.publishes, [])

    def test_the_django_test_mixin(self):
        from django.db import transaction
        from django.test import TestCase

        from foyer_backend.django import publish_on_commit
        from foyer_backend.testing import FoyerTestMixin

        class OrderTests(FoyerTestMixin, TestCase):
            def test_commit(self):
                with self.captureOnCommitCallbacks(execute=True):
                    with transaction.atomic():
                        publish_on_commit(fb.message("order.created", "orders:v"))
                self.assertPublished("order.created", "orders:v", count=1)

            def test_rollback(self):
                with self.captureOnCommitCallbacks(execute=True):
                    try:
                        with transaction.atomic():
                            publish_on_commit(fb.message("order.created", "orders:v"))
                            raise RuntimeError
                    except RuntimeError:
                        pass
                self.assertNothingPublished()

            def test_fails_when_missing(self):
                self.assertPublished("order.created")

        result = unittest.TestResult()
        unittest.defaultTestLoader.loadTestsFromTestCase(OrderTests).run(result)
        self.assertEqual(result.testsRun, 3)
        self.assertEqual([t.id().rsplit(".", 1)[1] for t, _ in result.failures], ["test_fails_when_missing"])
        self.assertEqual(result.errors, [])
        self.assertEqual(self.new_requests(), [])


class Commands(DjangoCase):
    def test_foyer_keygen_writes_a_private_jwk_0600_and_a_public_jwks(self):
        import stat
        import tempfile

        from django.core.management import call_command

        out_dir = tempfile.mkdtemp()
        out = io.StringIO()
        call_command("foyer_keygen", "--kid", "2026-11", "--out", out_dir, stdout=out)
        priv = os.path.join(out_dir, "foyer-2026-11.private.jwk.json")
        pub = json.load(open(os.path.join(out_dir, "foyer-2026-11.public.jwks.json")))
        self.assertEqual(stat.S_IMODE(os.stat(priv).st_mode), 0o600)
        self.assertNotIn("d", pub["keys"][0])
        self.assertEqual(fb.public_jwks(json.load(open(priv))), pub)
        self.assertIn("wrangler secret put JWT_KEYS", out.getvalue())
        from django.core.management.base import CommandError

        with self.assertRaises(CommandError):
            call_command("foyer_keygen", "--kid", "2026-11", "--out", out_dir, stdout=io.StringIO())

    def test_foyer_token_mints_from_the_foyer_settings(self):
        from django.core.management import call_command

        out = io.StringIO()
        call_command("foyer_token", "staff-1", "orders:v", "chat:o-1", "--publish", "chat:o-1", "--ttl", "60", stdout=out)
        claims = jwt.decode(out.getvalue().strip(), b"k" * 32, algorithms=["HS256"], audience="foyer")
        self.assertEqual((claims["sub"], claims["channels"], claims["publish"], claims["iss"], claims["exp"] - claims["iat"]),
                         ("staff-1", ["orders:v", "chat:o-1"], ["chat:o-1"], "iss", 60))

    def test_the_template_tag_renders_the_client_config_at_the_channels_seq(self):
        from django.template import Context, Template

        self.stub.script = [(200, '{"channel":"orders:v","seq":41,"sockets":0,"users":[],"truncated":false}', {})]
        html = Template('{% load foyer %}{% foyer_config "orders:v" read_seq=True %}').render(Context({}))
        cfg = json.loads(re.search(r'<script id="foyer-config" type="application/json">(.*)</script>', html).group(1))
        base = self.dj["base"]["URL"]
        self.assertEqual(cfg, {"client": base + "/client/foyer.js", "url": base.replace("http", "ws", 1),
                               "channel": "orders:v", "since": 41, "token_url": "/foyer/token"})
        with foyer(URL=f"http://127.0.0.1:{free_port()}"):
            with self.assertLogs("foyer_backend", level="WARNING"):
                from foyer_backend.django import client_config

                self.assertIsNone(client_config("orders:v", read_seq=True)["since"])
        self.assertEqual(client_config("payment:o-1", 7, settings=fb.Settings(url="https://gw.example"))["url"],
                         "wss://gw.example")


def dict_grants(request):
    return {"sub": "u-1", "channels": ["chat:r1"]}


def sample_grants(request):
    from foyer_backend.django import Grant

    return Grant("u-1", ["chat:r1"]) if request.GET.get("grant") else None


def _urls():
    from django.urls import include, path

    return [path("foyer/", include("foyer_backend.django.urls"))]


def __getattr__(name):  # ROOT_URLCONF = "backend_unit": the kit's URLs, built once Django is set up
    if name == "urlpatterns":
        return _urls()
    raise AttributeError(name)


def main():
    sys.modules.setdefault("backend_unit", sys.modules[__name__])
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    sys.exit(0 if result.wasSuccessful() and result.testsRun else 1)


if __name__ == "__main__":
    main()
