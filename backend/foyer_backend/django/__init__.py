"""The Django side of the Foyer kit (`pip install 'foyer-backend[django]'`).

Add `"foyer_backend.django"` to INSTALLED_APPS, `path("foyer/", include("foyer_backend.django.urls"))`
to the URLs, and set FOYER_GRANTS to your grants hook. Settings (docs/django.md has them all):

    FOYER_URL, JWT_KEYS, JWT_ISSUER, JWT_AUDIENCE, PUBLISH_SECRETS, TOKEN_MAX_LIFETIME,
    CHAT_WEBHOOK_SECRET     the gateway's names (each falls back to the environment)
    FOYER_GRANTS            dotted path of `grants(request) -> Grant | None` (required)
    FOYER_TOKEN_TTL         token lifetime in seconds, default 300
    FOYER_RETRY_FOR         seconds a publish is retried for, default 30 (at most 240)
    FOYER_TIMEOUT           seconds per attempt, default 10
    FOYER_PUBLISH_BACKGROUND  publish_on_commit sends from a background thread (default True)
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, List, Mapping, Optional, Sequence, Union

from .._client import Client
from .._settings import Settings
from .._wire import fix_ids
from ..webhook import InvalidSignature, verify_webhook

log = logging.getLogger("foyer_backend")

__all__ = ["Grant", "foyer_settings", "guest_sub", "publish_on_commit", "flush", "foyer_webhook"]

GUEST_SESSION_KEY = "_foyer_guest"


def foyer_settings() -> Settings:
    """The kit's Settings from Django settings (each name falling back to the environment)."""
    return Settings.from_django()


@dataclass
class Grant:
    """What the token view mints for one request: returned by the FOYER_GRANTS hook."""

    sub: str
    channels: Sequence[str]
    publish: Sequence[str] = field(default_factory=list)
    name: Optional[str] = None
    role: Optional[str] = None


def guest_sub(request) -> str:
    """A stable `sub` for an anonymous visitor, bound to their Django session.

    It is an HMAC (keyed by SECRET_KEY) of a random value kept in the session, never the
    session key itself: a token, or a chat peer who sees the `sub`, learns nothing that opens
    the session, and the value survives `cycle_key()` (e.g. at login). The session is created
    if the visitor has none yet."""
    from django.conf import settings

    session = request.session
    nonce = session.get(GUEST_SESSION_KEY)
    if not nonce:
        nonce = secrets.token_urlsafe(24)
        session[GUEST_SESSION_KEY] = nonce
    if session.session_key is None:
        session.save()
    digest = hmac.new(settings.SECRET_KEY.encode(), b"foyer-guest:" + nonce.encode(), hashlib.sha256).hexdigest()
    return "guest-" + digest[:32]


# Publishing after commit

_executor: Optional[ThreadPoolExecutor] = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    # One worker: publishes leave this process in commit order.
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="foyer-publish")
        return _executor


def _publish_logged(messages: List[dict]) -> Optional[dict]:
    try:
        return Client(foyer_settings()).publish(messages)
    except Exception:  # never into the request: logged with the ids, which make a replay safe
        log.exception("foyer: publish of %s failed; these ids can be published again safely",
                      ", ".join(m["id"] for m in messages))
        return None


def publish_on_commit(messages: Union[Mapping, Iterable[Mapping]], using: Optional[str] = None,
                      background: Optional[bool] = None) -> List[dict]:
    """Publishes `messages` once the current transaction commits; never if it rolls back.

    Outside a transaction (autocommit) it publishes at once. Ids are fixed now (written into
    the caller's dicts). The publish retries like `publish()` and, by default, runs on a
    background thread so the request never waits for the gateway
    (FOYER_PUBLISH_BACKGROUND=False runs it inline in the on-commit hook). Either way a
    failure is logged (logger "foyer_backend"), never raised into the request. Returns the
    messages with their ids."""
    from django.conf import settings
    from django.db import transaction

    msgs = fix_ids(messages)
    if background is None:
        background = getattr(settings, "FOYER_PUBLISH_BACKGROUND", True)

    def send():
        if background:
            _pool().submit(_publish_logged, msgs)
        else:
            _publish_logged(msgs)

    transaction.on_commit(send, using=using)
    return msgs


def flush(timeout: Optional[float] = None) -> bool:
    """Waits until the background publishes queued so far are done (e.g. at shutdown, in
    tests). True when they finished within `timeout`."""
    marker: Future = _pool().submit(lambda: None)
    try:
        marker.result(timeout=timeout)
        return True
    except Exception:
        return False


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
