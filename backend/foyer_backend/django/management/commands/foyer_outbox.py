"""`manage.py foyer_outbox`: sends what the outbox holds (once, or `--loop` as a service)."""
import signal
import time

from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS, close_old_connections
from django.utils import timezone

from ... import outbox


class Command(BaseCommand):
    help = ("Sends the pending rows of the Foyer outbox (publish_on_commit, link_on_commit) to the gateway. "
            "Once: every pending row now, whatever its schedule. --loop: keeps draining on the retry schedule "
            "(run it as a service; SIGTERM stops it between two sends).")

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="keep draining until stopped")
        parser.add_argument("--interval", type=float, default=1.0,
                            help="with --loop: seconds between two looks at an empty outbox (default 1)")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="the database whose outbox to drain")
        parser.add_argument("--retry-dead", action="store_true",
                            help="first give the rows set aside (dead: refused in a way no retry changes) another try")

    def handle(self, *args, loop=False, interval=1.0, database=DEFAULT_DB_ALIAS, retry_dead=False, **options):
        from ...models import OutboxEntry

        if retry_dead:
            n = OutboxEntry.objects.using(database).filter(dead=True).update(dead=False, claim="", next_try=timezone.now())
            self.stdout.write(f"foyer outbox: {n} dead row(s) given another try")
        if not loop:
            total = outbox.Report()
            while True:
                r = outbox.drain(database, everything=True)
                total.sent, total.failed, total.dead, total.pending = (
                    total.sent + r.sent, total.failed + r.failed, total.dead + r.dead, r.pending)
                if r.failed or not r.sent or not r.pending:
                    break
            self.stdout.write(f"foyer outbox: sent {total.sent}, failed {total.failed}, dead {total.dead}, "
                              f"pending {total.pending}")
            if total.failed:
                raise SystemExit(1)
            return
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(True))
        self.stdout.write(f"foyer outbox: draining {database!r} until stopped")
        try:
            while not stop:
                close_old_connections()
                r = outbox.drain(database)
                if r.sent or r.failed or r.dead:
                    self.stdout.write(f"foyer outbox: sent {r.sent}, failed {r.failed}, dead {r.dead}, pending {r.pending}")
                if r.pending and r.sent and not r.failed:
                    continue  # more behind: at once
                # After a failure the head row's backoff decides (the rows behind it wait for
                # it); otherwise look again within `interval` for rows other processes wrote.
                wait = interval
                if r.next_due is not None:
                    due_in = max(0.05, (r.next_due - timezone.now()).total_seconds())
                    wait = min(60.0, due_in) if r.failed else min(interval, due_in)
                end = time.monotonic() + wait
                while not stop and time.monotonic() < end:
                    time.sleep(min(0.2, max(0.0, end - time.monotonic())))
        except KeyboardInterrupt:
            pass
        self.stdout.write("foyer outbox: stopped")
