"""The Django side of the Foyer kit (`pip install 'foyer-backend[django]'`).

Add `"foyer_backend.django"` to INSTALLED_APPS (then `manage.py migrate`: the outbox table),
`path("foyer/", include("foyer_backend.django.urls"))` to the URLs, and one setting:

    FOYER = {
        "URL": "https://foyer.example.workers.dev",   # the gateway (required)
        "JWT_KEYS": {...},              # the backend's private JWK (or a JWKS), dict or JSON
        "JWT_ISSUER": "shop-backend",
        "PUBLISH_SECRETS": ["..."],     # the first signs
        "CHAT_WEBHOOK_SECRET": "...",   # for @foyer_webhook
        "GRANTS": "shop.foyer.grants",  # your hook: request -> Grant | None
        # optional: JWT_AUDIENCE ("foyer"), TOKEN_MAX_LIFETIME (900), TOKEN_TTL (300),
        # RETRY_FOR (30), TIMEOUT (10), SEND ("thread" | "inline" | "worker")
    }

`manage.py check` reports what is missing or wrong (foyer.E001...). docs/django.md has it all.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

from .. import _capture
from .. import _wire as w
from .._settings import SEND_MODES, Settings
from ..webhook import InvalidSignature, verify_webhook

log = logging.getLogger("foyer_backend")

__all__ = ["Grant", "client_config", "flush", "foyer_settings", "foyer_webhook", "guest_sub", "link_on_commit",
           "publish_on_commit", "staff_grant"]

GUEST_SESSION_KEY = "_foyer_guest"


def foyer_settings() -> Settings:
    """The kit's Settings from Django's `FOYER` dict (the same as `Settings.default()` in a
    Django project, which every function of the kit uses without `settings=`)."""
    return Settings.from_django()


# Who gets which channels

@dataclass
class Grant:
    """What the token view mints for one request: returned by the FOYER["GRANTS"] hook.

    Checked when it is made: `channels` and `publish` are lists of well-formed channel names
    (a string there is a TypeError: `Grant(channels="orders:v1")` would otherwise grant
    `o`, `r`, `d`, ...), `sub` a non-empty string."""

    sub: str
    channels: Sequence[str]
    publish: Sequence[str] = field(default_factory=list)
    name: Optional[str] = None
    role: Optional[str] = None

    def __post_init__(self):
        if not isinstance(self.sub, str) or not self.sub:
            raise TypeError(f"Grant.sub must be a non-empty string, not {self.sub!r}")
        self.channels = w.channel_list(self.channels, "Grant.channels")
        self.publish = w.channel_list(self.publish, "Grant.publish")
        for attr in ("name", "role"):
            v = getattr(self, attr)
            if v is not None and not isinstance(v, str):
                raise TypeError(f"Grant.{attr} must be a string or None, not {type(v).__name__}")


def staff_grant(sub: str, venue: str, chats: Iterable[str] = (), *, channels: Iterable[str] = (),
                name: Optional[str] = None, role: str = "staff") -> Grant:
    """A staff member's grant for a venue's inbox (PROTOCOL v1.2): `inbox:{venue}`, on which
    every linked chat and orders channel arrives over one socket, plus `publish` for the
    venue's `chats` (channel names `chat:KEY`), so staff answer any of them over the inbox
    socket. `channels` adds more subscriptions (e.g. `orders:{venue}` for a dashboard)."""
    inbox = f"inbox:{venue}"
    w.split_channel(inbox)
    chats = w.channel_list(chats, "chats")
    for c in chats:
        if w.split_channel(c)[0] != "chat":
            raise ValueError(f"staff_grant: chats are chat channels (chat:KEY), not {c!r}")
    extra = [c for c in w.channel_list(channels, "channels") if c != inbox]
    return Grant(sub=sub, channels=[inbox, *extra], publish=chats, name=name, role=role)


def guest_sub(request, create: bool = True) -> Optional[str]:
    """A stable `sub` for an anonymous visitor, bound to their Django session.

    It is an HMAC (keyed by SECRET_KEY) of a random value kept in the session, never the
    session key itself: a token, or a chat peer who sees the `sub`, learns nothing that opens
    the session, and the value survives `cycle_key()` (e.g. at login). With `create=True`
    (placing an order) the value, and the session, are created if needed; with
    `create=False` (a grants hook) a visitor who never got one gets None, and no session is
    created for them."""
    from django.conf import settings

    session = request.session
    nonce = session.get(GUEST_SESSION_KEY)
    if not nonce:
        if not create:
            return None
        nonce = secrets.token_urlsafe(24)
        session[GUEST_SESSION_KEY] = nonce
    if session.session_key is None:
        session.save()
    digest = hmac.new(settings.SECRET_KEY.encode(), b"foyer-guest:" + nonce.encode(), hashlib.sha256).hexdigest()
    return "guest-" + digest[:32]


# Publishing and linking after commit, through the outbox

def _mode(background: Optional[bool]) -> str:
    if background is not None:
        return "thread" if background else "inline"
    mode = foyer_settings().send
    if mode not in SEND_MODES:
        raise ValueError(f"FOYER['SEND'] must be one of {', '.join(SEND_MODES)}, not {mode!r}")
    return mode


def _after_commit(using: str, mode: str):
    from . import outbox

    if mode == "thread":
        outbox.sender.wake(using)
    elif mode == "inline":
        try:
            outbox.drain(using)
        except Exception:  # never into the request: the rows stay for the next drain
            log.exception("foyer: sending the outbox after commit failed; the rows stay and are sent by "
                          "the next drain (manage.py foyer_outbox)")


def _enqueue(kind: str, items: List[tuple], sent_form: list, using: Optional[str], background: Optional[bool]):
    from django.db import DEFAULT_DB_ALIAS, transaction

    using = using or DEFAULT_DB_ALIAS
    cap = _capture.current()
    if cap:  # the test fake: recorded on commit, nothing written or sent
        record = cap.publish if kind == "publish" else cap.link
        transaction.on_commit(lambda: record(sent_form), using=using)
        return
    from . import outbox

    mode = _mode(background)
    outbox.write(kind, items, using)
    transaction.on_commit(functools.partial(_after_commit, using, mode), using=using)


def publish_on_commit(messages: Union[Mapping, Iterable[Mapping]], using: Optional[str] = None,
                      background: Optional[bool] = None) -> List[dict]:
    """Publishes `messages` once the current transaction commits; never if it rolls back.

    At the call: ids are fixed (written into the caller's dicts), each message is validated
    and serialized with Django's JSON encoder (`Decimal`, `datetime`, `UUID`, lazy strings),
    so a mistake (a malformed channel, data that does not serialize, over 64 KiB) raises
    here, in the caller's code, inside the transaction; and the message is written to the
    outbox table in that transaction, on `using` (default "default"). So the event exists
    exactly when the data does.

    After the commit it is sent (FOYER["SEND"]: by this process's sender thread at once,
    "thread"; in the on-commit hook, "inline"; or only by `manage.py foyer_outbox`, "worker")
    and its row deleted; a send that fails leaves the row, retried with backoff. A gateway
    failure is logged, never raised into the request. In autocommit the row commits at once.
    `background` (deprecated) overrides SEND: True "thread", False "inline".
    Returns the messages with their ids."""
    from django.core.serializers.json import DjangoJSONEncoder

    msgs = w.fix_ids(messages, encoder=DjangoJSONEncoder)
    bodies = [w._dumps(m, DjangoJSONEncoder).decode() for m in msgs]
    _enqueue("publish", [(m["id"], b) for m, b in zip(msgs, bodies)], [json.loads(b) for b in bodies], using, background)
    return msgs


def link_on_commit(entries: Iterable[Any], using: Optional[str] = None, background: Optional[bool] = None) -> List[dict]:
    """Links channels into inboxes (PROTOCOL v1.2) once the current transaction commits,
    through the outbox like `publish_on_commit` (validated now, written in the transaction,
    sent after the commit, retried until the gateway accepts it). Entries are
    `(channel, inbox)` pairs or dicts `{"channel", "inbox", "remove"?}`. A link written
    before a publish in the same transaction reaches the gateway before it, so that event is
    already forwarded. Returns the entries as sent."""
    entries = w.link_entries(entries)
    items = [(f"links:{c[0]['channel']}", w._dumps(c).decode()) for c in w.chunks(entries, w.MAX_LINKS)]
    _enqueue("links", items, entries, using, background)
    return entries


def flush(timeout: Optional[float] = None, using: Optional[str] = None) -> bool:
    """Sends what the outbox holds now, from the sender thread, and waits for it (e.g. in a
    script before it exits, or in tests). True when the outbox is empty within `timeout`;
    False if rows remain (the gateway is down: they wait in the database)."""
    from . import outbox

    return outbox.sender.flush(using, timeout)


# A page's client configuration

def client_config(channel: str, since: Optional[int] = None, *, read_seq: bool = False,
                  settings: Optional[Settings] = None) -> dict:
    """What a page needs to load the browser client from the gateway and connect:
    `{"client", "url", "channel", "since", "token_url"}`, for `json_script` (or the
    `{% foyer_config %}` tag). `read_seq=True` reads the channel's current `seq` now
    (`channel_info`, 2 s at most), for a page rendered from the database that connects with
    `since` and so misses nothing; if the gateway cannot be read, `since` is None (logged)."""
    from django.urls import reverse

    from .._client import channel_info

    w.split_channel(channel)
    s = settings or foyer_settings()
    base = s.base_url()
    if read_seq:
        try:
            since = channel_info(channel, settings=s, retry_for=2)["seq"]
        except Exception as e:  # FoyerError, or the gateway unreachable
            log.warning("foyer: could not read %s (%s); the page connects without since", channel, e)
            since = None
    return {
        "client": base + "/client/foyer.js",
        "url": "ws" + base[4:],  # http -> ws, https -> wss
        "channel": channel,
        "since": since,
        "token_url": reverse("foyer-token"),
    }


# The chat webhook

def foyer_webhook(view):
    """Decorates a Django view that receives the gateway's chat webhook.

    The view runs only for a POST whose X-Foyer-Signature verifies against
    CHAT_WEBHOOK_SECRET over `request.path` within 300 s; it finds the parsed body in
    `request.foyer_message`. A missing or bad signature gets 403 (and the view does not
    run); no configured secret gets 503 (logged). CSRF is exempt: the signature is the check.
    Any non-2xx answer makes the gateway retry with the same body: dedupe by its `id`."""
    from django.http import HttpResponseNotAllowed, JsonResponse
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        s = foyer_settings()
        if not s.webhook_secret_list():
            log.error("foyer: CHAT_WEBHOOK_SECRET is not set; refusing the webhook")
            return JsonResponse({"error": "not_configured"}, status=503)
        try:
            request.foyer_message = verify_webhook(request.body, request.headers.get("X-Foyer-Signature"),
                                                   request.path, settings=s)
        except InvalidSignature:
            return JsonResponse({"error": "bad_signature"}, status=403)
        return view(request, *args, **kwargs)

    return wrapper
