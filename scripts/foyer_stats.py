"""`scripts/foyer stats`: a live per-venue summary of a Foyer gateway from its structured log.

Reads Foyer's JSON log lines (docs/operations.md, "Log lines") from `wrangler tail --format
json` (each record's `logs[].message`), from a saved log file, or from the local `wrangler
dev` output (lines that hold one JSON object after any prefix), and prints, for the last
minute: sockets open by kind, connects and refusals by close code or HTTP status, publishes
and deliveries, webhook failures and give-ups, forwarding retries, errors, per venue (the key
of an `orders` or `inbox` channel; other channels count under their kind).
"""
import collections
import json
import sys
import time

WINDOW_S = 60


def records(line):
    """The Foyer log records in one line of input (none when it holds none). `wrangler dev`
    frames warnings and errors (a prefix, terminal colours): the object is from the first
    `{` to the last `}`."""
    start, end = line.find("{"), line.rfind("}")
    if start < 0 or end < start:
        return []
    try:
        value = json.loads(line[start:end + 1])
    except ValueError:
        return []
    if isinstance(value, dict) and isinstance(value.get("logs"), list):  # wrangler tail --format json
        out = []
        for log in value["logs"]:
            for message in log.get("message") or []:
                if isinstance(message, str):
                    out.extend(records(message))
                elif isinstance(message, dict) and "event" in message:
                    out.append(message)
        return out
    return [value] if isinstance(value, dict) and isinstance(value.get("event"), str) else []


class Stats:
    """Counts over a sliding window, plus the sockets open (which need no window)."""

    def __init__(self, window_s=WINDOW_S):
        self.window_s = window_s
        self.seen = collections.deque()  # (ts seconds, record)
        self.open = collections.Counter()  # (venue, kind) -> sockets open
        self.latest = 0.0

    def add(self, record, now=None):
        ts = record.get("ts")
        ts = ts / 1000 if isinstance(ts, (int, float)) else (now if now is not None else time.time())
        self.latest = max(self.latest, ts)
        if record.get("event") == "connect" and record.get("outcome") == "welcome":
            self.open[(venue(record), record.get("kind", "?"))] += 1
        elif record.get("event") == "closed":
            key = (venue(record), record.get("kind", "?"))
            self.open[key] = max(0, self.open[key] - 1)
        self.seen.append((ts, record))

    def window(self, now=None):
        now = self.latest if now is None else now
        while self.seen and self.seen[0][0] < now - self.window_s:
            self.seen.popleft()
        return [r for ts, r in self.seen if ts >= now - self.window_s]

    def summary(self, now=None):
        """Per venue: {open: {kind: n}, connects: n, refused: {code: n}, publishes: n,
        delivered: n, webhook_failures: n, webhook_gave_up: n, forward_retries: n, errors: n}."""
        rows = collections.defaultdict(lambda: {
            "open": collections.Counter(), "connects": 0, "refused": collections.Counter(), "publishes": 0,
            "delivered": 0, "webhook_failures": 0, "webhook_gave_up": 0, "forward_retries": 0, "errors": 0})
        for (v, kind), n in self.open.items():
            if n:
                rows[v]["open"][kind] = n
        for r in self.window(now):
            event, v = r.get("event"), venue(r)
            row = rows[v]
            if event == "connect":
                # A refusal line in a flood stands for `count` refusals (docs/operations.md).
                n = r.get("count", 1)
                row["connects"] += n
                if r.get("outcome") != "welcome":
                    row["refused"][str(r.get("code"))] += n
            elif event == "delivery":
                row["publishes"] += r.get("events", 0)
                row["delivered"] += r.get("delivered", 0)
            elif event == "webhook" and r.get("outcome") != "delivered":
                row["webhook_failures"] += 1
                if r.get("outcome") == "gave_up":
                    row["webhook_gave_up"] += 1
            elif event == "forward" and r.get("outcome") in ("retry", "gave_up"):
                row["forward_retries"] += 1
            if r.get("level") == "error":
                row["errors"] += 1
        return dict(rows)


def venue(record):
    """The venue a record belongs to: an orders or inbox channel's key; else its kind."""
    kind, key = record.get("kind"), record.get("key")
    if kind in ("orders", "inbox") and key:
        return key
    return f"({kind})" if kind else "(gateway)"


def render(summary):
    lines = [f"{'venue':<24} {'open (kind)':<28} {'connects':>8} {'refused':<22} {'events':>7} {'delivered':>9} {'webhook x':>9} {'errors':>6}"]
    for v in sorted(summary):
        row = summary[v]
        opened = ",".join(f"{k}:{n}" for k, n in sorted(row["open"].items())) or "-"
        refused = ",".join(f"{c}:{n}" for c, n in sorted(row["refused"].items())) or "-"
        failures = f"{row['webhook_failures']}" + (f"({row['webhook_gave_up']}lost)" if row["webhook_gave_up"] else "")
        lines.append(f"{v:<24} {opened:<28} {row['connects']:>8} {refused:<22} {row['publishes']:>7} {row['delivered']:>9} {failures:>9} {row['errors']:>6}")
    return "\n".join(lines)


def run(source, once=False, refresh_s=2.0, out=sys.stdout):
    """Reads `source` (a file object) to its end (`once`), or follows it, redrawing the
    summary in place every `refresh_s` seconds."""
    stats = Stats()
    if once:
        for line in source:
            for r in records(line):
                stats.add(r)
        out.write(render(stats.summary()) + "\n")
        return stats
    last = 0.0
    for line in source:
        for r in records(line):
            stats.add(r, now=time.time())
        if time.time() - last >= refresh_s:
            last = time.time()
            out.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S") + f"  last {WINDOW_S} s\n" + render(stats.summary(now=time.time())) + "\n")
            out.flush()
    return stats
