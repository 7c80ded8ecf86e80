"""The kit's outbox on a real PostgreSQL: the Django test project (tests/django_project) with
its DATABASES pointed at a throwaway PostgreSQL cluster, against a stub gateway.

When PostgreSQL's binaries are on this machine (initdb on PATH, or a known install location
such as Debian's /usr/lib/postgresql/<version>/bin), it makes a cluster in a temporary
directory (as the unprivileged `postgres` user, or `nobody`, when run as root: PostgreSQL
refuses root), starts it listening on a unix socket in that directory only (no TCP), creates
a database, runs the project's migrations with the `django.db.backends.postgresql` engine,
and proves:

- publish_on_commit in a transaction that commits writes exactly one outbox row (invisible to
  other connections until the commit); a rolled-back one writes none; an order of the shop
  writes its links then its event, and nothing when rolled back;
- a drain (and `manage.py foyer_outbox`) sends each row once to the stub gateway, signed, in
  order, and deletes it; the sender thread does too;
- drainers running at once (threads, each with its own connection: the `--loop` service, the
  sender thread, one-off `manage.py foyer_outbox` runs) never send one row twice;
- a failing gateway (503) leaves the rows with their attempts, error and next try; they are
  not sent before that try, and are then sent with the same ids.

The server is stopped in every case (and by a watchdog if this process is killed). Without
PostgreSQL the test says it is skipped and exits 0.

    .venv/bin/python tests/django_postgres.py
"""
import collections
import glob
import io
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.join(HERE, "django_project")
sys.path.insert(0, PROJECT)

DEADLINE = 55  # seconds: the whole run (cluster, migrations, checks) is cut off after this

results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail and not ok else ""), flush=True)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# PostgreSQL: finding it, and one throwaway cluster

def pg_bindir():
    """The directory holding initdb, pg_ctl and postgres, or None."""
    def ok(d):
        return d and all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "postgres"))

    found = shutil.which("initdb")
    if found:
        d = os.path.dirname(os.path.realpath(found))
        if ok(d):
            return d
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            d = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
            if ok(d):
                return d
        except (OSError, subprocess.SubprocessError):
            pass

    def version(d):
        return [int(x) for x in re.findall(r"\d+", d)]

    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin",
                    "/opt/homebrew/opt/postgresql*/bin", "/usr/local/opt/postgresql*/bin"):
        for d in sorted(glob.glob(pattern), key=version, reverse=True):
            if ok(d):
                return d
    return None


class Cluster:
    """initdb + postgres in a temporary directory, on a unix socket there only."""

    DB, USER = "shop", "foyer"

    def __init__(self, bindir):
        self.bindir = bindir
        self.tmp = tempfile.mkdtemp(prefix="foyer-pg-")
        self.data = os.path.join(self.tmp, "data")
        self.port = free_port()  # names the socket file (.s.PGSQL.<port>); nothing listens on TCP
        self.proc = self.watchdog = None
        self.run_as = {}
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            for name in ("postgres", "nobody"):
                try:
                    pw = pwd.getpwnam(name)
                except KeyError:
                    continue
                self.run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
                os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
                break
            else:
                raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL")
        os.chmod(self.tmp, 0o700)
        self.env = dict(os.environ, LC_ALL="C", LANG="C", TZ="UTC")

    def start(self):
        t0 = time.monotonic()
        r = subprocess.run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", self.USER, "--auth=trust",
                            "-E", "UTF8", "--locale=C", "--no-sync"],
                           cwd=self.tmp, env=self.env, capture_output=True, text=True, timeout=40, **self.run_as)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()[-800:]}")
        self.log = os.path.join(self.tmp, "postgres.log")
        with open(self.log, "w") as log:
            if self.run_as:
                os.chown(self.log, self.run_as["user"], self.run_as["group"])
            self.proc = subprocess.Popen(
                [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(self.port), "-k", self.tmp,
                 "-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=40"],
                cwd=self.tmp, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, **self.run_as)
        # If this process dies without its finally (SIGKILL), the watchdog stops the server.
        self.watchdog = subprocess.Popen(
            ["sh", "-c", "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; kill -INT \"$2\" 2>/dev/null; "
                         "n=0; while kill -0 \"$2\" 2>/dev/null && [ $n -lt 50 ]; do sleep 0.2; n=$((n+1)); done; "
                         "kill -0 \"$2\" 2>/dev/null && kill -KILL \"$2\"; rm -rf \"$3\"",
             "watchdog", str(os.getpid()), str(self.proc.pid), self.tmp],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import psycopg

        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                with psycopg.connect(host=self.tmp, port=self.port, user=self.USER, dbname="postgres",
                                     autocommit=True, connect_timeout=2) as conn:
                    conn.execute(f'CREATE DATABASE "{self.DB}"')
                    self.version = conn.info.server_version
                break
            except psycopg.OperationalError:
                if time.monotonic() - t0 > 30:
                    raise RuntimeError(f"postgres did not accept connections in 30 s: {self.log_tail()}")
                time.sleep(0.1)
        return time.monotonic() - t0

    def log_tail(self):
        try:
            return open(self.log, encoding="utf-8", errors="replace").read()[-800:]
        except OSError:
            return ""

    def stop(self):
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL; then the directory."""
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 10), (signal.SIGQUIT, 5), (signal.SIGKILL, 5)):
                try:
                    self.proc.send_signal(sig)
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        if self.watchdog is not None and self.watchdog.poll() is None:
            self.watchdog.kill()
            self.watchdog.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)


# The stub gateway: /publish and /links with the gateway's JSON answers (docs/protocol.md)

class Gateway:
    def __init__(self, secret):
        self.secret, self.status, self.delay = secret, 200, 0.0
        self.lock = threading.Lock()
        self.requests = []  # every request: {"path", "signed", "ids" or "links", "status"}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                import foyer_backend as fb

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if stub.delay:
                    time.sleep(stub.delay)
                with stub.lock:
                    status = stub.status
                payload = json.loads(body or b"{}")
                rec = {"path": self.path, "status": status,
                       "signed": fb.verify_signature(self.headers.get("X-Foyer-Signature"), self.path, body, [stub.secret])}
                if self.path == "/publish":
                    rec["ids"] = [m["id"] for m in payload.get("messages", [payload])]
                    answer = {"results": [{"id": m["id"], "channel": c, "seq": 1, "delivered": 0, "duplicate": False}
                                          for m in payload.get("messages", [payload]) for c in m["channels"]]}
                elif self.path == "/links":
                    rec["links"] = payload["links"]
                    answer = {"results": [{"channel": e["channel"], "inbox": e["inbox"], "linked": not e.get("remove")}
                                          for e in payload["links"]]}
                else:
                    status, answer = 404, {"error": "not_found", "message": self.path}
                if not rec["signed"]:
                    status, answer = 401, {"error": "unauthorized", "message": "bad signature"}
                if status == 503:
                    answer = {"error": "unavailable", "message": "the stub is down"}
                rec["status"] = status
                with stub.lock:
                    stub.requests.append(rec)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def reset(self, status=200, delay=0.0):
        with self.lock:
            self.requests, self.status, self.delay = [], status, delay

    def accepted_ids(self):
        with self.lock:
            return [i for r in self.requests if r["path"] == "/publish" and r["status"] == 200 for i in r["ids"]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# Django on the cluster

def setup_django(cluster, gateway):
    import foyer_backend as fb

    private, _ = fb.generate_ed25519("pg")
    os.environ.update({
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "FOYER_URL": gateway.url, "JWT_KEYS": json.dumps(private),
        "JWT_ISSUER": "shop-backend", "PUBLISH_SECRETS": gateway.secret, "CHAT_WEBHOOK_SECRET": secrets.token_hex(16),
        "FOYER_LOG_LEVEL": "CRITICAL",  # failed sends log warnings: expected here
        "SHOP_DB": os.path.join(cluster.tmp, "unused.sqlite3"),
    })
    # The project's settings, with its database on the cluster and rows sent only by the
    # drains this test makes (SEND "worker"), unless a check says otherwise.
    mod = types.ModuleType("foyer_pg_settings")
    exec("from shopsite.settings import *", mod.__dict__)
    mod.DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": cluster.DB, "USER": cluster.USER,
                                 "HOST": cluster.tmp, "PORT": str(cluster.port), "CONN_MAX_AGE": 0}}
    mod.FOYER = dict(mod.FOYER, SEND="worker", TIMEOUT=5)
    sys.modules[mod.__name__] = mod
    os.environ["DJANGO_SETTINGS_MODULE"] = mod.__name__

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def in_thread(fn, timeout=20):
    """`fn()` in a new thread (so on its own database connection, closed after); its result."""
    from django.db import connections

    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # reported by the caller
            out["error"] = e
        finally:
            connections.close_all()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"{fn} still running after {timeout} s")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def msg(event, channel, data=None, id=None):
    import foyer_backend as fb

    return fb.message(event, [channel], data, id=id)


def run(cluster, gw):
    from decimal import Decimal

    from django.core.management import call_command
    from django.db import connection, transaction
    from django.test import override_settings
    from django.utils import timezone

    from foyer_backend.django import flush, publish_on_commit
    from foyer_backend.django import outbox
    from foyer_backend.django.models import OutboxEntry
    from shop.models import Order

    rows = OutboxEntry.objects
    tables = connection.introspection.table_names()
    check(f"the project's migrations ran on PostgreSQL {cluster.version // 10000} (foyer_outbox, shop_order)",
          connection.vendor == "postgresql" and "foyer_outbox" in tables and "shop_order" in tables,
          f"{connection.vendor}: {tables}")

    # 1. The row exists exactly when the transaction commits.
    seen_inside = {}
    with transaction.atomic():
        sent = publish_on_commit(msg("order.paid", "orders:venue-pg", {"total": Decimal("12.50"), "at": timezone.now()}))
        seen_inside["own"] = rows.count()
        seen_inside["other"] = in_thread(lambda: OutboxEntry.objects.count())
    committed = list(rows.values_list("kind", "key", "body"))
    check("a committed publish_on_commit writes exactly one outbox row, seen by others only after the commit",
          seen_inside == {"own": 1, "other": 0} and len(committed) == 1 and committed[0][:2] == ("publish", sent[0]["id"])
          and json.loads(committed[0][2])["data"]["total"] == "12.50", f"{seen_inside} {committed}")
    try:
        with transaction.atomic():
            publish_on_commit(msg("order.paid", "orders:venue-pg", {"rolled": "back"}))
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    check("a rolled-back publish_on_commit writes no row", rows.count() == 1, f"{rows.count()} rows")
    rows.all().delete()

    with transaction.atomic():
        order = Order.objects.create(venue="venue-pg", seat="A1", items=["tea", {"size": "large"}])
    try:
        with transaction.atomic():
            Order.objects.create(venue="venue-pg", seat="ROLLBACK", items=[])
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    got = list(rows.order_by("pk").values_list("kind", "key"))
    check("an order writes its links then its event in its transaction; a rolled-back order writes nothing",
          got == [("links", f"links:chat:{order.key}"), ("publish", f"order-{order.pk}-created")], str(got))

    # 2. A drain sends each row once and deletes it.
    gw.reset()
    more = [publish_on_commit(msg("order.ready", "orders:venue-pg", {"n": i}))[0]["id"] for i in range(3)]
    report = in_thread(lambda: outbox.drain())
    with gw.lock:
        paths = [r["path"] for r in gw.requests]
        signed = all(r["signed"] for r in gw.requests)
    check("a drain sends every row once, signed, links before the event, and deletes them",
          report.sent == 5 and report.pending == 0 and rows.count() == 0 and paths == ["/links", "/publish"]
          and signed and gw.accepted_ids() == [f"order-{order.pk}-created"] + more,
          f"{report} {paths} {gw.accepted_ids()}")

    gw.reset()
    ids = [publish_on_commit(msg("order.ready", "orders:venue-pg", {"n": i}))[0]["id"] for i in range(4)]
    buf = io.StringIO()
    call_command("foyer_outbox", stdout=buf)
    check("manage.py foyer_outbox drains what is pending, each row once",
          gw.accepted_ids() == ids and rows.count() == 0 and "sent 4, failed 0" in buf.getvalue(), buf.getvalue().strip())

    gw.reset()
    from django.conf import settings

    with override_settings(FOYER=dict(settings.FOYER, SEND="thread")):
        with transaction.atomic():
            ids = [publish_on_commit(msg("order.ready", "orders:venue-pg", {"thread": i}))[0]["id"] for i in range(2)]
        emptied = flush(timeout=10)
    check("the sender thread sends the committed rows on its own connection and empties the outbox",
          emptied and gw.accepted_ids() == ids and rows.count() == 0, f"{emptied} {gw.accepted_ids()} {rows.count()}")

    # 3. Drainers at once. Those that keep the schedule (the --loop service, each process's
    # sender thread: drain() without `everything`) claim the rows they send for a lease, so
    # one row is never sent twice. A one-off `manage.py foyer_outbox` takes every pending row,
    # schedule and claims alike (so rows held by a drainer that died mid-send need not wait for
    # its lease): next to another drainer it may send a row again, with the row's id (the
    # gateway dedupes it); it never loses one.
    def loop_drainer(done):
        sent, end = 0, time.monotonic() + 20
        while time.monotonic() < end:
            finished = done.is_set()
            r = outbox.drain()
            sent += r.sent
            if finished and r.pending == 0:
                return sent
            time.sleep(0.005)
        raise TimeoutError("the outbox was not emptied in 20 s")

    def one_off(done):
        out = io.StringIO()
        call_command("foyer_outbox", stdout=out)
        return int(re.search(r"sent (\d+)", out.getvalue()).group(1))

    def race(drainers, writes, per_write, delay, backlog=False):
        """`drainers` (functions of the writer's done event, returning the rows they sent) run
        in threads, each on its own connection, started together, while (or, with `backlog`,
        after) a writer commits `writes` transactions of `per_write` rows. Returns the ids
        written, the ids the gateway accepted (with repeats) and the rows each drainer sent."""
        gw.reset(delay=delay)
        rows.all().delete()
        written, done, errors, sent = [], threading.Event(), [], {}
        start = threading.Barrier(len(drainers) + (0 if backlog else 1))

        def writer():
            if not backlog:
                start.wait(10)
            for i in range(writes):
                with transaction.atomic():
                    written.extend(m["id"] for m in publish_on_commit(
                        [msg("order.ready", f"orders:venue-{i % 7}", {"i": i, "j": j}) for j in range(per_write)]))
                if not backlog:
                    time.sleep(0.01)
            done.set()

        def guarded(k, fn):
            try:
                def go():
                    start.wait(10)
                    return fn(done)
                sent[k] = in_thread(go, 30)
            except BaseException as e:
                errors.append(f"{type(e).__name__}: {e}")

        if backlog:
            in_thread(writer, 30)
        threads = [threading.Thread(target=guarded, args=(k, fn)) for k, fn in enumerate(drainers)]
        if not backlog:
            threads.append(threading.Thread(target=lambda: in_thread(writer, 30)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        return written, gw.accepted_ids(), [sent.get(k) for k in range(len(drainers))], errors

    def exactly_once(name, written, accepted, sent, errors):
        twice = [i for i, n in collections.Counter(accepted).items() if n > 1]
        split = "+".join(str(n) for n in sent)
        check(f"{name}: {len(written)} rows, each sent exactly once (rows sent by each drainer: {split})",
              not errors and written and sorted(accepted) == sorted(written) and not twice and rows.count() == 0,
              f"errors {errors}; {len(accepted)} sends of {len(written)} rows, {len(twice)} sent twice, "
              f"{len(set(written) - set(accepted))} never, {rows.count()} left; rows sent by each drainer {sent}")

    exactly_once("two --loop drainers while orders commit",
                 *race([loop_drainer, loop_drainer], writes=40, per_write=5, delay=0.01))
    exactly_once("a --loop drainer and two sender threads over a backlog",
                 *race([loop_drainer, loop_drainer, loop_drainer], writes=1, per_write=300, delay=0.05, backlog=True))

    written, accepted, sent, errors = race([one_off, one_off, loop_drainer], writes=1, per_write=300, delay=0.05,
                                           backlog=True)
    again = len(accepted) - len(set(accepted))
    check(f"two one-off manage.py foyer_outbox runs and a --loop drainer over a backlog: every row sent, none lost "
          f"({again} extra sends, each with its row's id: the one-off runs take claimed rows too)",
          not errors and set(accepted) == set(written) and len(written) == 300 and rows.count() == 0,
          f"errors {errors}; {len(set(written) - set(accepted))} never sent, {rows.count()} left, {again} sent again")

    # 4. A failing gateway: the rows stay with attempts and a next try, then go with the same ids.
    rows.all().delete()
    gw.reset(status=503)
    ids = [publish_on_commit(msg("order.ready", "orders:venue-pg", {"retry": i}))[0]["id"] for i in range(3)]
    before = timezone.now()
    report = in_thread(lambda: outbox.drain())
    state = list(rows.order_by("pk").values_list("key", "attempts", "next_try", "claim", "last_error"))
    tried = [i for r in gw.requests for i in r.get("ids", [])]
    check("a 503 leaves every row with 1 attempt, its error, no claim and a next try in the future",
          report.failed == 3 and report.sent == 0 and tried == ids and [s[0] for s in state] == ids
          and all(a == 1 and nt > before and claim == "" and "503" in err for _, a, nt, claim, err in state),
          f"{report} {state}")

    gw.reset(status=200)
    early = in_thread(lambda: outbox.drain())
    check("nothing is sent before the next try", early.sent == 0 and gw.accepted_ids() == [] and rows.count() == 3,
          f"{early} {gw.accepted_ids()}")
    wait = (max(s[2] for s in state) - timezone.now()).total_seconds()
    time.sleep(max(0.0, wait) + 0.05)
    later = in_thread(lambda: outbox.drain())
    check("at the next try a drain sends them, with the same ids, and deletes them",
          later.sent == 3 and gw.accepted_ids() == ids and rows.count() == 0, f"{later} {gw.accepted_ids()}")


class Timeout(Exception):
    pass


def main():
    bindir = pg_bindir()
    if not bindir:
        print("skipped: no PostgreSQL on this machine (initdb not found)")
        print("0 passed, 0 failed, 1 skipped")
        sys.exit(0)

    def cut_off(signum, frame):
        raise Timeout(f"signal {signum}: cut off after {time.monotonic() - t0:.0f} s")

    t0 = time.monotonic()
    signal.signal(signal.SIGALRM, cut_off)
    signal.signal(signal.SIGTERM, cut_off)  # e.g. a CI timeout: the finally below still stops the server
    signal.alarm(DEADLINE)
    cluster = gw = None
    try:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise RuntimeError("PostgreSQL is here but its driver is not: psycopg (scripts/requirements.txt; "
                               "scripts/setup installs it)")
        gw = Gateway(secrets.token_hex(16))
        cluster = Cluster(bindir)
        took = cluster.start()
        print(f"PostgreSQL {cluster.version} from {bindir} up in {took:.1f} s", flush=True)
        setup_django(cluster, gw)
        run(cluster, gw)
    except BaseException:
        traceback.print_exc()
        if cluster is not None and cluster.proc is not None:
            print(cluster.log_tail(), file=sys.stderr)
        check("the test ran to its end", False)
    finally:
        signal.alarm(0)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        if cluster is not None:
            cluster.stop()
        if gw is not None:
            gw.close()
        passed = sum(results)
        print(f"took {time.monotonic() - t0:.1f} s")
        print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if results and all(results) else 1)


if __name__ == "__main__":
    main()
