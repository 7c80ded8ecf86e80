"""What `foyer_backend.testing.capture()` records: every publish, link, revoke and token the
code under test makes, answered as the gateway would answer, with nothing sent."""
from __future__ import annotations

import json
import threading
from typing import Dict, List, Optional, Set, Tuple

from . import _wire as w

_stack: List["Captured"] = []
_lock = threading.Lock()

MAX_LINKS_PER_CHANNEL = 8  # PROTOCOL v1.2: a ninth link answers too_many_links


def current() -> Optional["Captured"]:
    """The innermost active capture (every thread sees it: a test's code may run anywhere)."""
    return _stack[-1] if _stack else None


class Captured:
    """The calls made while a capture was active.

    publishes  every message published (as the JSON sent: dicts with id, channels, event,
               data), in order; `publish_on_commit` ones only once their transaction commits
    links      every link entry sent (`{"channel", "inbox", "remove"?}`), in order
    revokes    every revocation (`{"sub", "channels"?}`)
    tokens     the claims of every token minted (`sub`, `channels`, `publish`, `exp`, ...)
    """

    def __init__(self):
        self.publishes: List[dict] = []
        self.links: List[dict] = []
        self.revokes: List[dict] = []
        self.tokens: List[dict] = []
        self._seq: Dict[str, int] = {}
        self._history: Dict[str, List[dict]] = {}
        self._ids: Set[Tuple[str, str]] = set()
        self._linked: Dict[str, List[str]] = {}

    # Reading what was captured

    def events(self, channel: Optional[str] = None, event: Optional[str] = None) -> List[dict]:
        """The published messages, optionally those naming `channel` and/or named `event`."""
        return [m for m in self.publishes
                if (channel is None or channel in m["channels"]) and (event is None or m["event"] == event)]

    def linked(self, inbox: str) -> List[str]:
        """The channels linked into `inbox` now (after every link and unlink so far)."""
        return sorted(c for c, inboxes in self._linked.items() if inbox in inboxes)

    def clear(self):
        self.__init__()

    # Answering as the gateway would

    def publish(self, messages: List[dict]) -> dict:
        results = []
        with _lock:
            for m in messages:
                sent = json.loads(w.publish_body([m]))["messages"][0]  # serializes as a real send would
                self.publishes.append(sent)
                for c in sent["channels"]:
                    if (sent["id"], c) in self._ids:
                        results.append({"id": sent["id"], "channel": c, "seq": self._seq.get(c, 0),
                                        "delivered": 0, "duplicate": True})
                        continue
                    self._ids.add((sent["id"], c))
                    seq = self._seq[c] = self._seq.get(c, 0) + 1
                    self._history.setdefault(c, []).append(
                        {"seq": seq, "id": sent["id"], "event": sent["event"], "data": sent.get("data"), "ts": 0})
                    results.append({"id": sent["id"], "channel": c, "seq": seq, "delivered": 0, "duplicate": False})
        return {"results": results}

    def link(self, entries: List[dict]) -> dict:
        results = []
        with _lock:
            for e in entries:
                self.links.append(dict(e))
                inboxes = self._linked.setdefault(e["channel"], [])
                r = {"channel": e["channel"], "inbox": e["inbox"]}
                if e.get("remove"):
                    if e["inbox"] in inboxes:
                        inboxes.remove(e["inbox"])
                    r["linked"] = False
                elif e["inbox"] in inboxes:
                    r["linked"] = True
                elif len(inboxes) >= MAX_LINKS_PER_CHANNEL:
                    r.update(linked=False, error="too_many_links")
                else:
                    inboxes.append(e["inbox"])
                    r["linked"] = True
                results.append(r)
        return {"results": results}

    def revoke(self, body: bytes) -> dict:
        with _lock:
            self.revokes.append(json.loads(body))
        return {"closed": 0}

    def token(self, claims: dict):
        with _lock:
            self.tokens.append(dict(claims))

    def channel_info(self, channel: str) -> dict:
        w.split_channel(channel)
        return {"channel": channel, "seq": self._seq.get(channel, 0), "sockets": 0, "users": [], "truncated": False}

    def history(self, channel: str, since: int = 0, limit: int = 100) -> dict:
        w.history_target(channel, since, limit)  # the same validation
        events = [e for e in self._history.get(channel, []) if e["seq"] > since][:limit]
        return {"channel": channel, "seq": self._seq.get(channel, 0), "reset": False, "events": events}


def push(c: Captured):
    with _lock:
        _stack.append(c)


def pop(c: Captured):
    with _lock:
        if c in _stack:
            _stack.remove(c)
