"""The outbox's rules, without I/O: which pending rows go now, how they are grouped into
requests, what a failed send means for them, and when they are tried again.

The Django shell (`foyer_backend.django.outbox`) reads rows, asks these functions, sends what
they say and writes back what they decide. Time comes in as `now`; randomness as `rng`."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, List, Optional, Sequence, Tuple

from . import _wire as w

PUBLISH, LINKS = "publish", "links"

# A drainer owns the rows it claimed for this long; a drainer that died mid-send gives them
# back when it ends. Longer than one attempt (TIMEOUT) of every request of one pass would be
# ideal; the gateway dedupes a publish sent twice, and links are idempotent, so an overlap
# costs a request, never a duplicate.
LEASE = timedelta(seconds=30)

# Retry schedule of a row whose send failed: 1 s doubling to 5 minutes, jittered.
RETRY_BASE, RETRY_CAP = 1.0, 300.0


@dataclass
class Row:
    pk: int
    kind: str
    body: str  # the JSON written at the call: one message, or a list of link entries
    attempts: int = 0
    next_try: Optional[datetime] = None


def due(rows: Sequence[Row], now: datetime, everything: bool = False) -> Tuple[List[Row], Optional[datetime]]:
    """The rows to send now, and when the first row left behind is due (None: none left).

    Rows leave in the order they were written (`pk`): the due prefix goes, and a row not yet
    due (backing off, or claimed by another drainer) holds the rows behind it, so one
    channel's events never overtake each other. `everything` (a one-off drain by an operator)
    takes every row at once, schedule or not."""
    rows = sorted(rows, key=lambda r: r.pk)
    if everything:
        return rows, None
    for i, r in enumerate(rows):
        if r.next_try is not None and r.next_try > now:
            return rows[:i], r.next_try
    return rows, None


@dataclass
class Request:
    kind: str
    rows: List[Row]
    body: bytes

    @property
    def path(self) -> str:
        return "/publish" if self.kind == PUBLISH else "/links"


def requests(rows: Sequence[Row]) -> List[Request]:
    """The rows as requests, in order: consecutive rows of one kind share a request within
    the gateway's limits (100 messages, 100 distinct channels, ~240 KiB; 100 links)."""
    out: List[Request] = []
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and rows[j].kind == rows[i].kind:
            j += 1
        run = list(rows[i:j])
        if run[0].kind == PUBLISH:
            msgs = [json.loads(r.body) for r in run]
            k = 0
            for batch in w.batches(msgs):
                out.append(Request(PUBLISH, run[k:k + len(batch)], w.publish_body(batch)))
                k += len(batch)
        else:
            cur: List[Row] = []
            entries: list = []
            for r in run:
                mine = json.loads(r.body)
                if cur and len(entries) + len(mine) > w.MAX_LINKS:
                    out.append(Request(LINKS, cur, w.links_body(entries)))
                    cur, entries = [], []
                cur.append(r)
                entries.extend(mine)
            if cur:
                out.append(Request(LINKS, cur, w.links_body(entries)))
        i = j
    return out


SENT, RETRY, SPLIT, DEAD = "sent", "retry", "split", "dead"


# Answers that a retry of the same request cannot change: malformed (400), a route this
# gateway does not have (404, 405: e.g. /links before PROTOCOL v1.2), too large (413), wrong
# content type (415). 401/403 are not among them: a secret being rotated is fixed by config.
REFUSED = (400, 404, 405, 413, 415)


def outcome(error: Optional[BaseException], rows: int) -> str:
    """What a send's result means for its rows. A refusal no retry can change (`REFUSED`)
    splits a request of several rows to find the one at fault, and sets a single row aside
    (dead: kept, logged, never retried by itself), so it never holds the rows behind it.
    Anything else (the network, 5xx, 429, 401 for a secret being rotated, a missing setting)
    is retried with backoff."""
    if error is None:
        return SENT
    if isinstance(error, w.FoyerError) and error.status in REFUSED:
        return SPLIT if rows > 1 else DEAD
    return RETRY


def retry_at(attempts: int, now: datetime, rng: Callable[[], float] = random.random) -> datetime:
    """When a row that has now failed `attempts` times (1, 2, ...) is tried again."""
    step = min(RETRY_CAP, RETRY_BASE * (2 ** min(attempts - 1, 20)))
    return now + timedelta(seconds=step / 2 + rng() * step / 2)
