"""What the sync and async clients share: signatures, messages, batches, the retry policy."""
from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import time
import urllib.parse
import uuid
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

# PROTOCOL limits for one /publish request.
MAX_MESSAGES = 100
MAX_CHANNELS = 100  # per message, and distinct channels per request
MAX_BODY = 256 * 1024
MAX_DATA = 64 * 1024
# The kit keeps each request a little under the body limit.
BATCH_BODY_BUDGET = 240 * 1024
# A signature is valid for ±300 s at the gateway; retries reuse the first signature (so a
# retried /revoke keeps its time), so they must end well within that.
MAX_RETRY_FOR = 240.0

_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
KINDS = ("orders", "payment", "chat", "inbox")  # inbox: PROTOCOL v1.2
MAX_LINKS = 100  # entries in one /links request


class FoyerError(Exception):
    """A request the gateway refused (4xx other than 429), or that failed after its retries.

    status   the HTTP status of the last answer (None after a network error)
    code     the gateway's error code (`"error"` field), when it answered JSON
    body     the last answer's text
    results  for publish: the results of the requests that did succeed before this one
    """

    def __init__(self, message: str, status: Optional[int] = None, code: Optional[str] = None,
                 body: str = "", results: Optional[list] = None):
        super().__init__(message)
        self.status, self.code, self.body, self.results = status, code, body, results or []


class InvalidSignature(Exception):
    """A webhook whose X-Foyer-Signature is missing, wrong or stale."""


FoyerError.__module__ = InvalidSignature.__module__ = "foyer_backend"  # as users import them


# Signatures (PROTOCOL "Publishing": t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<path>." + body)>)

def sign(path: str, body: bytes, secret: Union[str, bytes], t: Optional[int] = None) -> str:
    """The `X-Foyer-Signature` value for `body` sent to `path` (for GETs, the request target
    with its `?query`, and an empty body)."""
    t = int(time.time()) if t is None else int(t)
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, f"{t}.{path}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def request_headers(method: str, target: str, body: bytes, secret: Union[str, bytes]) -> dict:
    """The headers of one signed request to the gateway (sync and async clients alike)."""
    headers = {"X-Foyer-Signature": sign(target, body, secret)}
    if method == "POST":
        headers["Content-Type"] = "application/json"
    return headers


def verify_signature(header: Optional[str], path: str, body: bytes, secrets: Sequence[Union[str, bytes]],
                     tolerance: int = 300, now: Optional[float] = None) -> bool:
    """True when `header` signs `body` sent to `path` with one of `secrets`, within `tolerance`
    seconds of `now`. Several `v1=` entries are allowed; hex in either case; constant time."""
    if not header or not secrets:
        return False
    t, macs = None, []
    for part in header.split(","):
        k, sep, v = part.strip().partition("=")
        if not sep:
            continue
        if k == "t":
            if t is not None:
                return False  # two timestamps: ambiguous, refused (as the gateway does)
            t = v
        elif k == "v1":
            macs.append(v.lower())
    # ASCII only: "²".isdigit() is true but int() refuses it, and compare_digest refuses
    # non-ASCII strings; either would be an exception (a 500) instead of a refusal.
    macs = [m for m in macs if m.isascii()]
    if t is None or not (t.isascii() and t.isdigit()) or not macs:
        return False
    now = time.time() if now is None else now
    if abs(now - int(t)) > tolerance:
        return False
    ok = False
    for secret in secrets:
        key = secret.encode() if isinstance(secret, str) else secret
        expected = hmac.new(key, f"{t}.{path}.".encode() + body, hashlib.sha256).hexdigest()
        for mac in macs:
            ok |= hmac.compare_digest(expected.encode(), mac.encode())  # no early exit: every pair is compared
    return ok


# Channels

def split_channel(channel: str):
    if not isinstance(channel, str):
        raise ValueError(f"not a channel name: {channel!r} (a string KIND:KEY)")
    kind, sep, key = channel.partition(":")
    if not sep or kind not in KINDS or not _KEY.match(key):
        raise ValueError(f"not a channel name: {channel!r} (KIND:KEY, KIND one of {', '.join(KINDS)})")
    return kind, key


def channel_path(channel: str) -> str:
    kind, key = split_channel(channel)
    return f"/channels/{kind}/{key}"


def history_target(channel: str, since: int = 0, limit: int = 100) -> str:
    if int(since) < 0 or not 1 <= int(limit) <= 1000:
        raise ValueError("history: since >= 0 and 1 <= limit <= 1000")
    return channel_path(channel) + "/history?" + urllib.parse.urlencode({"since": int(since), "limit": int(limit)})


# Messages

def new_id() -> str:
    return "evt-" + uuid.uuid4().hex


def message(event: str, channels: Union[str, Sequence[str]], data: Any = None, id: Optional[str] = None) -> dict:
    """A publish message with its `id` fixed now: publishing the same dict again (a retry)
    is deduplicated by the gateway instead of delivered twice."""
    return {"id": id or new_id(), "channels": [channels] if isinstance(channels, str) else list(channels),
            "event": event, "data": data}


def fix_ids(messages: Union[Mapping, Iterable[Mapping]], encoder: Optional[type] = None) -> List[dict]:
    """The messages as a list, each given an `id` if it has none. The id is written into the
    caller's dict, so a retry of the same message object reuses it. Validated as the gateway
    would, so a bad message fails here, before any request. `encoder` (a `json.JSONEncoder`
    subclass, e.g. Django's) is how `data` is serialized for the size check."""
    if isinstance(messages, Mapping):
        messages = [messages]
    out, seen = [], set()
    for m in messages:
        if not isinstance(m, dict):
            raise TypeError("a message is a dict with channels, event and optionally id and data")
        if not m.get("id"):
            m["id"] = new_id()
        if not isinstance(m["id"], str) or len(m["id"]) > 128:
            raise ValueError(f"message id must be a string of at most 128 characters: {m['id']!r}")
        if m["id"] in seen:
            raise ValueError(f"message id {m['id']!r} appears twice in one publish")
        seen.add(m["id"])
        channels = m.get("channels")
        if isinstance(channels, str) or not channels or len(channels) > MAX_CHANNELS:
            raise ValueError(f"message {m['id']}: channels must be a list of 1..={MAX_CHANNELS} channel names")
        for c in channels:
            split_channel(c)
        ev = m.get("event")
        if not isinstance(ev, str) or not 1 <= len(ev) <= 128:
            raise ValueError(f"message {m['id']}: event must be a non-empty string of at most 128 characters")
        if len(_dumps(m.get("data"), encoder)) > MAX_DATA:
            raise ValueError(f"message {m['id']}: data is over 64 KiB serialized")
        out.append(m)
    if not out:
        raise ValueError("nothing to publish")
    return out


def _dumps(value, encoder: Optional[type] = None) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, cls=encoder).encode()


def channel_list(channels: Any, what: str = "channels") -> List[str]:
    """A list of well-formed channel names; a bare string is refused (it would be read as a
    list of one-letter names)."""
    if isinstance(channels, (str, bytes)):
        raise TypeError(f"{what} must be a list of channel names, not a string: [{channels!r}]")
    if isinstance(channels, Mapping) or not isinstance(channels, Iterable):
        raise TypeError(f"{what} must be a list of channel names, not {type(channels).__name__}")
    out = list(channels)
    for c in out:
        if not isinstance(c, str):
            raise TypeError(f"{what}: a channel name is a string, not {type(c).__name__} ({c!r})")
        split_channel(c)
    return out


def batches(messages: Sequence[Mapping], max_messages: int = MAX_MESSAGES, max_channels: int = MAX_CHANNELS,
            max_bytes: int = BATCH_BODY_BUDGET) -> List[List[Mapping]]:
    """Splits messages, in order, into requests of at most `max_messages` messages, at most
    `max_channels` distinct channels and about `max_bytes` of body each."""
    out, cur, chans, size = [], [], set(), 16
    for m in messages:
        m_chans = set(m["channels"])
        m_size = len(_dumps(m)) + 1
        if cur and (len(cur) >= max_messages or len(chans | m_chans) > max_channels or size + m_size > max_bytes):
            out.append(cur)
            cur, chans, size = [], set(), 16
        cur.append(m)
        chans |= m_chans
        size += m_size
    if cur:
        out.append(cur)
    return out


def publish_body(batch: Sequence[Mapping]) -> bytes:
    return _dumps({"messages": [dict(m) for m in batch]})


# Links (PROTOCOL v1.2 "Inboxes")

def link_entries(entries: Iterable[Any]) -> List[dict]:
    """`POST /links` entries, validated as the gateway would (so a bad one fails before any
    request). Each is `{"channel", "inbox", "remove"?}` or a `(channel, inbox)` pair."""
    if isinstance(entries, Mapping):
        entries = [entries]
    out = []
    for e in entries:
        if isinstance(e, Mapping):
            unknown = set(e) - {"channel", "inbox", "remove"}
            if unknown:
                raise ValueError(f"a link has channel, inbox and optionally remove; not {sorted(unknown)}")
            channel, inbox, remove = e.get("channel"), e.get("inbox"), e.get("remove", False)
        elif isinstance(e, (tuple, list)) and len(e) == 2:
            (channel, inbox), remove = e, False
        else:
            raise TypeError(f"a link is a (channel, inbox) pair or a dict, not {e!r}")
        if not isinstance(channel, str) or not isinstance(inbox, str):
            raise TypeError(f"a link's channel and inbox are channel names: {e!r}")
        if split_channel(channel)[0] == "inbox":
            raise ValueError(f"an inbox cannot be linked into an inbox: {channel!r}")
        if split_channel(inbox)[0] != "inbox":
            raise ValueError(f"links go into an inbox channel (inbox:KEY), not {inbox!r}")
        if not isinstance(remove, bool):
            raise TypeError(f"remove is true or false, not {remove!r}")
        out.append({"channel": channel, "inbox": inbox, "remove": True} if remove else {"channel": channel, "inbox": inbox})
    if not out:
        raise ValueError("no links given")
    return out


def links_body(batch: Sequence[Mapping]) -> bytes:
    return _dumps({"links": [dict(e) for e in batch]})


def chunks(items: Sequence, size: int) -> List[list]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


# Revocation

def revoke_body(sub: str, channels: Optional[Iterable[str]] = None) -> bytes:
    """`POST /revoke`: without `channels`, every channel (no "channels" key is sent); with
    them, 1..=100 channel names. An empty list is refused here: PROTOCOL v1.2 answers it
    400, and it is never what a caller meant ("none" or "all"?)."""
    if not isinstance(sub, str) or not sub:
        raise ValueError("revoke: sub must be a non-empty string")
    payload: dict = {"sub": sub}
    if channels is not None:
        chans = channel_list(channels)
        if not chans:
            raise ValueError("revoke: channels=[] names no channel; pass None (the default) to revoke every channel")
        if len(chans) > MAX_CHANNELS:
            raise ValueError(f"revoke: at most {MAX_CHANNELS} channels a request")
        payload["channels"] = chans
    return _dumps(payload)


# Retries

def retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def backoff(attempt: int, base: float = 0.25, cap: float = 5.0, rng=random.random) -> float:
    """Delay after failed attempt `attempt` (1, 2, ...): exponential, capped, with jitter
    (between half and all of the exponential step)."""
    step = min(cap, base * (2 ** (attempt - 1)))
    return step / 2 + rng() * step / 2


def retry_after(headers) -> Optional[float]:
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def error_from(status: int, text: str, path: str) -> FoyerError:
    code = None
    try:
        code = json.loads(text).get("error")
    except (ValueError, AttributeError):
        pass
    return FoyerError(f"{path.split('?')[0]} answered {status}: {text[:300]}", status=status, code=code, body=text)


def clamp_retry_for(value: Optional[float], default: float) -> float:
    v = default if value is None else float(value)
    return max(0.0, min(v, MAX_RETRY_FOR))
