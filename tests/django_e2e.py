"""A real Django project (tests/django_project: Django from PyPI, SQLite) with the backend kit
installed from ./backend, against a real gateway under `wrangler dev`.

It generates an Ed25519 pair with the kit (the gateway holds only the public JWKS), starts
the Django project on a local port (the gateway's CHAT_WEBHOOK_URL points at it, and its
origin is in ALLOWED_ORIGINS), and proves: `manage.py check` passes on the project's FOYER
settings; tokens for staff sessions and for anonymous customers (4403 on another customer's
order); publish after commit only; the outbox (an order placed with the gateway down, a Django
process killed right after its commit, and one that exits within 2 s: `manage.py foyer_outbox`
delivers each event exactly once when the gateway is back); the chat webhook verified by the
kit; a dashboard rendered at the channel's seq then connected with `since`; and the venue's
inbox (PROTOCOL v1.2), linked on each order's commit, followed and answered by staff.

    .venv/bin/python tests/django_e2e.py
"""
import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
PROJECT = os.path.join(HERE, "django_project")
sys.path.insert(0, PROJECT)

import foyer_backend as fb  # noqa: E402  (installed from ./backend by scripts/setup)
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail and not ok else ""), flush=True)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def claims_of(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class Gateway:
    """`wrangler dev` on a fixed port and persistence directory, so it can be stopped and started again."""

    def __init__(self, tmp, env):
        self.port, self.tmp, self.proc = free_port(), tmp, None
        self.env_file = os.path.join(tmp, "gateway.env")
        with open(self.env_file, "w") as f:
            f.writelines(f"{k}='{v}'\n" for k, v in env.items())
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = self.base.replace("http", "ws", 1)

    def start(self):
        # scripts/gateway: wrangler dev with the project's Node; `ready URL` once /healthz answers.
        log = os.path.join(self.tmp, "wrangler.log")
        self.proc = subprocess.Popen(
            [os.path.join(ROOT, "scripts", "gateway"), "--port", str(self.port), "--vars", self.env_file,
             "--persist", os.path.join(self.tmp, "state"), "--log", log, "--watch", str(os.getpid())],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True)
        ready = self.proc.stdout.readline().startswith("ready ")
        self.proc.stdout.close()
        if not ready:
            self.proc.wait()
            raise SystemExit("wrangler dev did not start; see " + log)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class Socket:
    """A websocket client as a page on the Django site would open it (Origin: the site)."""

    def __init__(self, gw, channel, token, origin, since=None):
        kind, key = channel.split(":", 1)
        url = f"{gw.ws}/ws/{kind}/{key}" + (f"?since={since}" if since is not None else "")
        self.closed = None
        self.ws = ws_connect(url, subprotocols=["foyer.v1", "bearer." + token], origin=origin, open_timeout=20)

    def recv(self, timeout=10):
        try:
            return json.loads(self.ws.recv(timeout=timeout))
        except TimeoutError:
            return None
        except ConnectionClosed as e:
            self.closed = e.rcvd.code if e.rcvd else None
            return None

    def events(self, seconds):
        """Every event frame received within `seconds`."""
        out, end = [], time.time() + seconds
        while time.time() < end:
            f = self.recv(timeout=max(0.05, end - time.time()))
            if f is None and self.closed is not None:
                break
            if f and f.get("type") == "event":
                out.append(f)
        return out

    def close(self):
        self.ws.close()


def until(sock, pred, seconds):
    """The event frames received until one satisfies `pred` (or `seconds` pass)."""
    out, end = [], time.time() + seconds
    while time.time() < end:
        f = sock.recv(timeout=max(0.05, end - time.time()))
        if f is None and sock.closed is not None:
            break
        if f and f.get("type") == "event":
            out.append(f)
            if pred(f):
                break
    return out


# Another process of the same Django project (the environment main() set up), committing one
# order: it prints "committed <pk>" after the commit, then lingers for `linger` seconds.
ORDER_SCRIPT = """
import time
import django
django.setup()
from django.db import transaction
from shop.models import Order
with transaction.atomic():
    order = Order.objects.create(venue={venue!r}, seat={seat!r}, items=["tea"])
print("committed", order.pk, flush=True)
time.sleep({linger})
"""


def django_process(code):
    return subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True)


def first_frame_or_close(gw, channel, token, origin):
    try:
        s = Socket(gw, channel, token, origin)
    except Exception as e:  # HTTP refusal (e.g. 403 for an origin)
        return ("refused", getattr(getattr(e, "response", None), "status_code", str(e)))
    f = s.recv()
    s.close()
    return f if f is not None else ("closed", s.closed)


def main():
    tmp = tempfile.mkdtemp(prefix="foyer-django-")
    private, public = fb.generate_ed25519("django-test")
    issuer, publish_secret, hook_secret = "shop-backend", secrets.token_hex(32), secrets.token_hex(32)
    django_port = free_port()
    origin = f"http://127.0.0.1:{django_port}"
    gw = Gateway(tmp, {"JWT_KEYS": json.dumps(public), "JWT_ISSUER": issuer, "PUBLISH_SECRETS": publish_secret,
                       "CHAT_WEBHOOK_URL": f"{origin}/hooks/chat", "CHAT_WEBHOOK_SECRET": hook_secret,
                       "ALLOWED_ORIGINS": origin})
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "shopsite.settings", "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "SHOP_DB": os.path.join(tmp, "shop.sqlite3"), "FOYER_URL": gw.base,
        "JWT_KEYS": json.dumps(private), "JWT_ISSUER": issuer, "PUBLISH_SECRETS": publish_secret,
        "CHAT_WEBHOOK_SECRET": hook_secret, "FOYER_LOG_LEVEL": "ERROR",
    })
    import django

    django.setup()
    from django.core.management import call_command
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    call_command("migrate", verbosity=0)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadedWSGIServer(("127.0.0.1", django_port), Quiet, allow_reuse_address=True)
    server.set_app(get_wsgi_application())
    threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()

    t0 = time.time()
    gw.start()
    print(f"gateway up in {time.time() - t0:.1f} s; Django on {origin}", flush=True)
    try:
        run(gw, origin, hook_secret)
    except Exception:
        traceback.print_exc()
        check("the test ran to its end", False)
    finally:
        gw.stop()
        server.shutdown()
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if results and all(results) else 1)


def run(gw, origin, hook_secret):
    from django.contrib.auth.models import User
    from django.db import transaction
    from django.test import Client

    from foyer_backend.django import flush, foyer_settings
    from shop.models import ChatMessage, Order, StaffProfile

    venue = "venue-" + secrets.token_hex(3)
    orders_ch = f"orders:{venue}"

    from django.core.checks import ERROR, run_checks

    problems = [str(m) for m in run_checks() if m.level >= ERROR]
    check("manage.py check passes on the project's FOYER settings", not problems, problems)

    # --- Staff: a logged-in session gets a token from the kit's view -------------------------
    password = "pw-" + secrets.token_hex(8)
    user = User.objects.create_user("sam", password=password, first_name="Sam", is_staff=True)
    StaffProfile.objects.create(user=user, venue=venue)
    staff = Client()
    check("staff log in with their password", staff.login(username="sam", password=password))
    r = staff.get("/foyer/token")
    staff_token = r.content.decode()
    c = claims_of(staff_token) if r.status_code == 200 else {}
    check("the kit's token view gives a logged-in staff session a token", r.status_code == 200 and "no-store" in r["Cache-Control"],
          r.status_code)
    check("the staff token grants the venue's orders, as staff", c.get("sub") == f"staff-{user.pk}" and orders_ch in c.get("channels", [])
          and c.get("role") == "staff" and c.get("name") == "Sam", c)
    f = first_frame_or_close(gw, orders_ch, staff_token, origin)
    check("the staff token opens the venue's orders channel from the Django site's origin",
          isinstance(f, dict) and f.get("type") == "welcome", f)
    f = first_frame_or_close(gw, orders_ch, staff_token, "http://elsewhere.example")
    check("another origin is refused (only ALLOWED_ORIGINS and the gateway's own)", f == ("refused", 403), f)
    nobody = Client()
    r = nobody.get("/foyer/token")
    check("an anonymous visitor without an order gets no token (403)", r.status_code == 403, r.status_code)
    check("and asking created no session for them", "sessionid" not in r.cookies, r.cookies)

    # --- Anonymous customers: a token bound to the session, for the orders placed in it ------
    ann, bob = Client(), Client()
    ra = ann.post("/order", {"venue": venue, "seat": "A12", "items": ["tea", "cake"]})
    rb = bob.post("/order", {"venue": venue, "seat": "B3", "items": ["coffee"]})
    flush(30)
    a_key, b_key = ra.json()["order"], rb.json()["order"]
    r = ann.get("/foyer/token")
    ann_token = r.content.decode() if r.status_code == 200 else ""
    c = claims_of(ann_token) if ann_token else {}
    session_key = ann.session.session_key
    check("a customer who ordered without an account gets a token",
          r.status_code == 200 and ra.status_code == 201, (r.status_code, ra.status_code))
    check("it grants exactly that order's payment and chat (publish: chat only)",
          c.get("channels") == [f"payment:{a_key}", f"chat:{a_key}"] and c.get("publish") == [f"chat:{a_key}"]
          and c.get("role") == "customer", c)
    check("its sub is derived from the session, never the session key",
          c.get("sub", "").startswith("guest-") and session_key and session_key not in ann_token
          and claims_of(ann.get("/foyer/token").content.decode())["sub"] == c.get("sub"), c.get("sub"))
    check("another customer's session gets another sub",
          claims_of(bob.get("/foyer/token").content.decode())["sub"] != c.get("sub"))
    s = Socket(gw, f"payment:{a_key}", ann_token, origin)
    welcome, replay = s.recv(), s.events(1.5)
    s.close()
    check("the customer's payment channel opens", welcome and welcome.get("type") == "welcome", welcome)
    check("and replays the order's state published on commit (a late page sees it at once)",
          [e["id"] for e in replay] == [f"order-{a_key[2:]}-created"] and replay[0]["data"]["seat"] == "A12", replay)
    f = first_frame_or_close(gw, f"chat:{a_key}", ann_token, origin)
    check("the customer's chat channel opens", isinstance(f, dict) and f.get("type") == "welcome", f)
    for ch in (f"payment:{b_key}", f"chat:{b_key}"):
        f = first_frame_or_close(gw, ch, ann_token, origin)
        check(f"another customer's order is refused with 4403 ({ch.split(':')[0]})", f == ("closed", 4403), f)
    check("the customer's order page renders for its session only",
          ann.get(f"/order/{a_key[2:]}").status_code == 200 and bob.get(f"/order/{a_key[2:]}").status_code == 404)

    # --- Publish on commit: once after commit, never after a rollback ------------------------
    feed = Socket(gw, orders_ch, staff_token, origin)
    feed.recv()
    try:
        with transaction.atomic():
            Order.objects.create(venue=venue, seat="ROLLBACK", items=["ghost"])
            raise RuntimeError("the view failed")
    except RuntimeError:
        pass
    flush(30)
    with transaction.atomic():
        committed = Order.objects.create(venue=venue, seat="C7", items=["wine"])
        flush(30)
        early = feed.events(1.5)
    flush(30)
    after = feed.events(2.5)
    check("nothing is published before the commit", early == [], early)
    check("the committed order reaches the websocket client exactly once, after commit",
          [e["data"]["seat"] for e in after] == ["C7"] and after[0]["id"] == f"order-{committed.pk}-created", after)
    check("the rolled-back order reaches nobody", all(e["data"]["seat"] != "ROLLBACK" for e in early + after))
    last_seq = after[-1]["seq"] if after else None
    feed.close()

    # --- The outbox: nothing committed is lost, whatever process dies when --------------------
    from django.conf import settings as dj_settings
    from django.test import override_settings

    from foyer_backend.django.models import OutboxEntry

    gw.stop()
    t0 = time.time()
    # This process leaves its rows to `manage.py foyer_outbox` (FOYER["SEND"] = "worker"), so
    # the command below is what delivers them.
    with override_settings(FOYER=dict(dj_settings.FOYER, SEND="worker")):
        rd = ann.post("/order", {"venue": venue, "seat": "D4", "items": ["water"]})
    took = time.time() - t0
    check("an order placed while the gateway is down still succeeds at once",
          rd.status_code == 201 and took < 2, (rd.status_code, round(took, 2)))
    d_key = rd.json()["order"] if rd.status_code == 201 else "o-0"
    d_id = f"order-{d_key[2:]}-created"
    check("its event waits in the outbox table, written in the order's transaction",
          OutboxEntry.objects.filter(kind="publish", key=d_id).count() == 1)

    # Another Django process commits an order and is killed at once (SIGKILL), the gateway down.
    killed = django_process(ORDER_SCRIPT.format(venue=venue, seat="K9", linger=60))
    line = killed.stdout.readline().split()
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    k_id = f"order-{line[1]}-created" if line[:1] == ["committed"] else None
    check("a Django process killed right after its commit leaves its event in the outbox",
          k_id is not None and OutboxEntry.objects.filter(key=k_id).exists(), line)

    # A process that commits with the gateway down and exits: the sender does not hold it.
    exiting = django_process(ORDER_SCRIPT.format(venue=venue, seat="X1", linger=0))
    line = exiting.stdout.readline().split()
    t0 = time.time()
    try:
        exiting.wait(timeout=30)
    except subprocess.TimeoutExpired:
        exiting.kill()
        exiting.wait()
    exit_took = time.time() - t0
    x_id = f"order-{line[1]}-created" if line[:1] == ["committed"] else None
    check("a process that committed with the gateway down exits within 2 s",
          x_id is not None and exiting.returncode == 0 and exit_took <= 2.0, (line, exiting.returncode, round(exit_took, 2)))
    check("and its event stays in the outbox", x_id is not None and OutboxEntry.objects.filter(key=x_id).exists())

    gw.start()
    out = subprocess.run([sys.executable, "manage.py", "foyer_outbox"], cwd=PROJECT, capture_output=True, text=True,
                         timeout=120)
    check("manage.py foyer_outbox sends what the outbox held once the gateway is back",
          out.returncode == 0 and "failed 0" in out.stdout and "pending 0" in out.stdout, out.stdout + out.stderr)
    check("the outbox is empty after it", OutboxEntry.objects.count() == 0,
          list(OutboxEntry.objects.values_list("key", "attempts", "last_error")))
    ann_token = ann.get("/foyer/token").content.decode()
    s = Socket(gw, f"payment:{d_key}", ann_token, origin)
    s.recv()
    got = s.events(1.5)
    s.close()
    check("the order's payment channel holds it exactly once", [e["id"] for e in got] == [d_id], got)
    s = Socket(gw, orders_ch, staff_token, origin, since=last_seq)
    s.recv()
    got = s.events(2)
    s.close()
    check("the venue's feed resumed with since receives each of the three orders exactly once, in commit order",
          [e["id"] for e in got] == [d_id, k_id, x_id] and (last_seq is None or got[0]["seq"] == last_seq + 1),
          [(e["id"], e["seq"]) for e in got])
    again = subprocess.run([sys.executable, "manage.py", "foyer_outbox"], cwd=PROJECT, capture_output=True, text=True,
                           timeout=60)
    check("a second drain sends nothing", again.returncode == 0 and "sent 0" in again.stdout, again.stdout + again.stderr)
    again = fb.publish(fb.message("order.created", [orders_ch], id=d_id), settings=foyer_settings())
    check("publishing the same id again is answered duplicate", again["results"][0]["duplicate"] is True, again)

    # --- The chat webhook lands in a Django view protected by the kit's verifier -------------
    ann_sub = claims_of(ann_token)["sub"]
    room = Socket(gw, f"chat:{a_key}", ann_token, origin)
    room.recv()
    room.ws.send(json.dumps({"type": "send", "id": "m1", "text": "Where is my tea?"}))
    echoed = room.events(2)
    room.close()
    check("the customer's chat message is delivered to the room", [e["data"]["text"] for e in echoed] == ["Where is my tea?"], echoed)
    deadline, row = time.time() + 30, None
    while time.time() < deadline and row is None:
        row = ChatMessage.objects.filter(foyer_id=f"{ann_sub}/m1").first()
        time.sleep(0.2)
    check("the gateway's signed webhook reached the Django view and was stored",
          row is not None and row.text == "Where is my tea?" and row.channel == f"chat:{a_key}" and row.author_sub == ann_sub,
          row and row.__dict__)
    body = json.dumps({"id": "forged/1", "channel": f"chat:{a_key}", "seq": 99, "event": "chat.message", "ts": 1,
                       "author": {"sub": "staff-1", "name": "Boss", "role": "staff"}, "text": "refund everyone",
                       "client_id": "1"}).encode()
    hook = origin + "/hooks/chat"

    def post(data, sig):
        headers = {"Content-Type": "application/json"}
        if sig:
            headers["X-Foyer-Signature"] = sig
        try:
            return urllib.request.urlopen(urllib.request.Request(hook, data, headers), timeout=10).status
        except urllib.error.HTTPError as e:
            return e.code

    good = fb.sign("/hooks/chat", body, hook_secret)
    check("a tampered webhook body is refused (403)", post(body.replace(b"everyone", b"me"), good) == 403)
    check("an unsigned or wrongly signed webhook is refused (403)",
          post(body, None) == 403 and post(body, fb.sign("/hooks/chat", body, "guess")) == 403
          and post(body, fb.sign("/other", body, hook_secret)) == 403)
    check("a correctly signed one is accepted, and a retry of it stored once",
          post(body, good) == 204 and post(body, good) == 204 and ChatMessage.objects.filter(foyer_id="forged/1").count() == 1)
    check("the refused ones stored nothing", ChatMessage.objects.filter(text="refund me").count() == 0)

    # --- PROTOCOL v1.1 reading: dashboard at the channel's seq, then connect with since ------
    info = None
    try:
        info = fb.channel_info(orders_ch, settings=foyer_settings(), retry_for=2)
    except fb.FoyerError as e:
        info = e
    check("channel_info reads the venue's seq (GET /channels/orders/{key})",
          isinstance(info, dict) and info.get("channel") == orders_ch and isinstance(info.get("seq"), int), info)
    page = staff.get("/dashboard")
    html = page.content.decode()
    m = re.search(r'data-seq="(\d*)"', html)
    seq = int(m.group(1)) if m and m.group(1) else None
    check("the dashboard renders the venue's orders",
          page.status_code == 200 and all(f'data-order="{k}"' in html for k in (a_key, b_key, d_key)), page.status_code)
    check("the dashboard renders at the channel's seq and loads the client from the gateway",
          seq is not None and isinstance(info, dict) and seq == info["seq"]
          and f'{gw.base}/client/foyer.js' in html.replace("\\u002F", "/"), seq)
    between = Order.objects.create(venue=venue, seat="E5", items=["crisps"])  # published between render and connect
    flush(30)
    s = Socket(gw, orders_ch, staff_token, origin, since=seq)
    w = s.recv()
    got = s.events(2)
    s.close()
    check("connecting with since=<rendered seq> misses nothing published in between",
          seq is not None and [e["id"] for e in got] == [f"order-{between.pk}-created"] and got[0]["seq"] == seq + 1
          and w.get("seq") == seq + 1, (seq, w, got))
    try:
        h = fb.history(orders_ch, since=max(0, (seq or 1) - 1), limit=10, settings=foyer_settings(), retry_for=2)
    except fb.FoyerError as e:
        h = e
    check("history reads the retained events after since (GET .../history?since=N&limit=M)",
          isinstance(h, dict) and [e["seq"] for e in h.get("events", [])] == [seq, seq + 1] and h.get("reset") is False, h)

    # --- PROTOCOL v1.1: who is in a chat room -----------------------------------------------
    room = Socket(gw, f"chat:{a_key}", ann_token, origin)
    w = room.recv()
    check("a chat welcome lists presence and count", isinstance(w, dict) and w.get("count") == 1
          and w.get("presence") == [{"sub": ann_sub, "name": "Seat D4", "role": "customer"}], w)
    try:
        info = fb.channel_info(f"chat:{a_key}", settings=foyer_settings(), retry_for=2)
    except fb.FoyerError as e:
        info = e
    room.close()
    check("channel_info lists the room's users and sockets", isinstance(info, dict) and info.get("sockets") == 1
          and [u["sub"] for u in info.get("users", [])] == [ann_sub], info)

    # --- PROTOCOL v1.2: the venue's inbox, linked by the kit on each order's commit ----------
    inbox = f"inbox:{venue}"
    staff_token = staff.get("/foyer/token").content.decode()
    c = claims_of(staff_token)
    check("the staff token grants the venue's inbox and publish for its chats (staff_grant)",
          inbox in c.get("channels", []) and f"chat:{a_key}" in c.get("publish", []), c)
    ib = Socket(gw, inbox, staff_token, origin)
    w = ib.recv()
    check("the staff inbox opens", isinstance(w, dict) and w.get("type") == "welcome", w)
    replay = ib.events(1.5)  # the inbox replays its last 50 events
    check("its replay holds the orders forwarded from the venue's feed, each marked with its source",
          any(e.get("source", {}).get("channel") == orders_ch and e["id"] == d_id for e in replay),
          [(e.get("source"), e.get("id")) for e in replay])
    fresh = Order.objects.create(venue=venue, seat="F6", items=["tea"])  # autocommit: links, then the publish
    flush(30)
    got = until(ib, lambda e: e.get("id") == f"order-{fresh.pk}-created", 10)
    check("an order created now reaches the inbox from the orders feed",
          any(e.get("source", {}).get("channel") == orders_ch and e["id"] == f"order-{fresh.pk}-created" for e in got),
          [(e.get("source"), e.get("id")) for e in got])
    room = Socket(gw, f"chat:{a_key}", ann_token, origin)
    room.recv()
    room.events(1)
    room.ws.send(json.dumps({"type": "send", "id": "m2", "text": "And a spoon, please"}))
    got = until(ib, lambda e: (e.get("data") or {}).get("text") == "And a spoon, please", 10)
    check("a customer's chat message reaches the staff inbox, marked with its chat",
          any(e.get("source", {}).get("channel") == f"chat:{a_key}" and (e.get("data") or {}).get("text") == "And a spoon, please"
              for e in got), [(e.get("source"), e.get("data")) for e in got])
    ib.ws.send(json.dumps({"type": "send", "channel": f"chat:{a_key}", "id": "r1", "text": "Coming right up"}))
    heard = until(room, lambda e: (e.get("data") or {}).get("text") == "Coming right up", 10)
    check("a staff answer sent over the inbox reaches the customer's chat, as staff",
          any((e.get("data") or {}).get("text") == "Coming right up" and e["data"].get("author", {}).get("role") == "staff"
              for e in heard), heard)
    room.close()
    ib.close()


if __name__ == "__main__":
    main()
