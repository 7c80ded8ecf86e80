"""The outbox's shell: rows in the database, sends to the gateway, one sender thread.

`publish_on_commit` / `link_on_commit` write rows in the caller's transaction; after the
commit the process's sender thread drains them at once (FOYER["SEND"] = "thread", the
default), or the on-commit hook does ("inline"), or only `manage.py foyer_outbox` does
("worker"). Whatever the mode, a row stays until the gateway accepted it, so a committed
event is never lost: a crash, a deploy or an outage only delays it until the next drain
(`manage.py foyer_outbox --loop` in production, or the next commit of any process).

What is due, how rows are grouped, what a failure means and when to retry are decided by
`foyer_backend._outbox` (no I/O); this module only reads and writes rows and sends."""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import List, Optional

from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone

from .. import _outbox as core
from .._client import Client
from .._settings import Settings

log = logging.getLogger("foyer_backend")

BATCH_ROWS = 500  # rows read per pass; a larger backlog takes several passes


@dataclass
class Report:
    """What one drain did: rows sent, rows that failed (retried later), rows set aside."""

    sent: int = 0
    failed: int = 0
    dead: int = 0
    pending: int = 0  # rows left in the outbox (not dead) after the drain
    next_due: Optional[datetime] = None  # when the first row left is due, None if none
    errors: List[str] = field(default_factory=list)


def _model():
    from .models import OutboxEntry

    return OutboxEntry


def write(kind: str, items, using: Optional[str] = None) -> None:
    """Writes rows (`(key, body)` pairs) on `using`, in the caller's transaction."""
    Entry = _model()
    Entry.objects.using(using or DEFAULT_DB_ALIAS).bulk_create(
        [Entry(kind=kind, key=key[:128], body=body) for key, body in items])


def drain(using: Optional[str] = None, everything: bool = False, settings: Optional[Settings] = None,
          limit: int = BATCH_ROWS, rng=None) -> Report:
    """Sends what is due on `using`, in order, one attempt per request; stops at the first
    failure (the rows behind it wait, so a channel's events keep their order). `everything`
    sends every pending row, schedule or not (an operator's one-off drain)."""
    Entry = _model()
    alias = using or DEFAULT_DB_ALIAS
    objects = Entry.objects.using(alias)
    report = Report()
    now = timezone.now()
    rows = [core.Row(pk, kind, body, attempts, next_try) for pk, kind, body, attempts, next_try in
            objects.filter(dead=False).order_by("pk").values_list("pk", "kind", "body", "attempts", "next_try")[:limit]]
    todo, report.next_due = core.due(rows, now, everything)
    if todo:
        token = uuid.uuid4().hex
        claim = objects.filter(pk__in=[r.pk for r in todo])
        if not everything:
            claim = claim.filter(next_try__lte=now)  # not taken by another drainer in between
        claim.update(claim=token, next_try=now + core.LEASE)
        mine = set(objects.filter(claim=token).values_list("pk", flat=True))
        todo = [r for r in todo if r.pk in mine]
        s = settings or Settings.default()
        client = Client(s)
        left = _send(objects, client, core.requests(todo), report, rng)
        if left:  # not attempted after a failure: due again at once, attempts unchanged
            objects.filter(pk__in=[r.pk for r in left], claim=token).update(claim="", next_try=now)
    remaining = objects.filter(dead=False)
    report.pending = remaining.count()
    if report.pending:
        first = remaining.order_by("pk").values_list("next_try", flat=True).first()
        report.next_due = first if first is not None else report.next_due
    else:
        report.next_due = None
    return report


def _send(objects, client: Client, reqs: List[core.Request], report: Report, rng) -> List[core.Row]:
    """Sends the requests in order; returns the rows left unsent after a retryable failure."""
    for i, req in enumerate(reqs):
        error: Optional[BaseException] = None
        answer = None
        try:
            answer = client.request("POST", req.path, req.body, retry_for=0)
        except Exception as e:  # the network, the gateway, or a missing setting: decided below
            error = e
        verdict = core.outcome(error, len(req.rows))
        pks = [r.pk for r in req.rows]
        if verdict == core.SENT:
            objects.filter(pk__in=pks).delete()
            report.sent += len(pks)
            if req.kind == core.LINKS:
                for r in (answer or {}).get("results", []):
                    if r.get("error"):
                        log.warning("foyer: link %s -> %s refused: %s", r.get("channel"), r.get("inbox"), r["error"])
        elif verdict == core.SPLIT:
            singles = [core.requests([r])[0] for r in req.rows]
            left = _send(objects, client, singles, report, rng)
            if left:
                return left + [r for q in reqs[i + 1:] for r in q.rows]
        elif verdict == core.DEAD:
            objects.filter(pk__in=pks).update(dead=True, claim="", last_error=str(error)[:2000],
                                              attempts=req.rows[0].attempts + 1)
            report.dead += len(pks)
            log.error("foyer: the gateway refused outbox row %s (%s), which no retry changes; it is kept (dead=True) "
                      "and not retried: %s", pks[0], error, req.rows[0].body[:500])
        else:
            now = timezone.now()
            for r in req.rows:
                attempts = r.attempts + 1
                objects.filter(pk=r.pk).update(
                    attempts=attempts, claim="", last_error=str(error)[:2000],
                    next_try=core.retry_at(attempts, now, rng) if rng else core.retry_at(attempts, now))
            report.failed += len(pks)
            report.errors.append(str(error))
            log.warning("foyer: sending %d outbox row(s) to %s failed (%s); they stay in the outbox and are "
                        "retried with backoff", len(pks), req.path, error)
            return [r for q in reqs[i + 1:] for r in q.rows]
    return []


# The sender thread: prompt delivery after a commit, retries while the process lives.

class Sender:
    """One daemon thread per process. A commit wakes it; it drains the databases it was told
    about, then sleeps until the first pending row is due (or the next wake). It holds no
    messages in memory (the rows wait in the database), and being a daemon it never holds
    the process at exit: `atexit` gives a send in flight at most `EXIT_GRACE` seconds."""

    EXIT_GRACE = 1.0
    MAX_SLEEP = 60.0

    def __init__(self):
        self._cv = threading.Condition()
        self._aliases: set = set()
        self._wanted = self._done = 0
        self._busy = False
        self._pending = False
        self._delay: Optional[float] = None
        self._thread: Optional[threading.Thread] = None
        self._pid: Optional[int] = None

    def wake(self, using: Optional[str] = None) -> int:
        with self._cv:
            self._aliases.add(using or DEFAULT_DB_ALIAS)
            self._wanted += 1
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()  # after a fork the parent's thread is not ours
                self._thread = threading.Thread(target=self._run, name="foyer-outbox", daemon=True)
                self._thread.start()
            self._cv.notify_all()
            return self._wanted

    def wait(self, generation: int, timeout: Optional[float]) -> bool:
        """Until a pass asked for at `generation` (or later) is done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._done < generation:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def flush(self, using: Optional[str], timeout: Optional[float]) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.wait(self.wake(using), left):
                return False
            with self._cv:
                if not self._pending:
                    return True
                delay = self._delay if self._delay is not None else 0.2
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            time.sleep(max(0.05, min(delay, 1.0) if left is None else min(delay, left, 1.0)))

    def _run(self):
        delay: Optional[float] = None
        while True:
            with self._cv:
                if self._done >= self._wanted:
                    self._cv.wait(delay)
                generation, aliases = self._wanted, set(self._aliases)
                self._busy = True
            pending, next_due = False, None
            for alias in aliases:
                try:
                    report = drain(alias)
                except Exception as e:  # e.g. the table is missing, or the database is locked
                    log.warning("foyer: draining the outbox on %r failed: %s", alias, e)
                    pending, report = True, None
                    next_due = next_due or timezone.now() + timedelta(seconds=5)
                finally:
                    try:
                        connections[alias].close()  # this thread's connection; reopened next pass
                    except Exception:  # pragma: no cover
                        pass
                if report and report.pending:
                    pending = True
                    if report.next_due and (next_due is None or report.next_due < next_due):
                        next_due = report.next_due
            delay = None
            if pending:
                due_in = (next_due - timezone.now()).total_seconds() if next_due else 1.0
                delay = min(self.MAX_SLEEP, max(0.05, due_in))
            with self._cv:
                self._busy, self._pending, self._delay = False, pending, delay
                self._done = max(self._done, generation)
                self._cv.notify_all()

    def at_exit(self):
        end = time.monotonic() + self.EXIT_GRACE
        with self._cv:
            while self._busy and time.monotonic() < end:
                self._cv.wait(max(0.0, end - time.monotonic()))


sender = Sender()
atexit.register(sender.at_exit)
