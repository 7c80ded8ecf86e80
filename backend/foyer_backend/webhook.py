"""The chat webhook: verify what the gateway POSTs to CHAT_WEBHOOK_URL."""
from __future__ import annotations

import json
from typing import Optional, Sequence, Union

from . import _wire as w
from ._settings import Settings


def verify_webhook(body: bytes, signature: Optional[str], path: str,
                   secret: Union[str, Sequence[str], None] = None, settings: Optional[Settings] = None,
                   tolerance: int = 300, now: Optional[float] = None) -> dict:
    """The webhook's JSON body, when `signature` (the `X-Foyer-Signature` header) signs `body`
    sent to `path` (the webhook URL's path, without query) with `secret` (a string, possibly
    comma-separated, or a list; default CHAT_WEBHOOK_SECRET from `Settings.default()`) within `tolerance` seconds.
    Otherwise raises `InvalidSignature`.

    The body is `{"id", "channel", "seq", "event", "ts", "author": {"sub", "name", "role"},
    "text", "client_id"}`; retries carry the same body, so dedupe by `id`."""
    if secret is None:
        secrets = (settings or Settings.default()).webhook_secret_list()
    elif isinstance(secret, str):
        secrets = [s.strip() for s in secret.split(",") if s.strip()]
    else:
        secrets = list(secret)
    if not secrets:
        raise InvalidSignature("no webhook secret configured (CHAT_WEBHOOK_SECRET)")
    if not w.verify_signature(signature, path, body, secrets, tolerance=tolerance, now=now):
        raise InvalidSignature("missing, wrong or stale X-Foyer-Signature")
    try:
        value = json.loads(body)
    except ValueError as e:
        raise InvalidSignature("signed body is not JSON") from e
    if not isinstance(value, dict):
        raise InvalidSignature("signed body is not a JSON object")
    return value


InvalidSignature = w.InvalidSignature
