"""Foyer backend kit: tokens, signed publishes with retries, inbox links, channel reads,
revocation and webhook verification for the Foyer gateway (docs/protocol.md), plus a Django
app with a durable outbox (`foyer_backend.django`), an async client (`foyer_backend.aio`) and
a test fake (`foyer_backend.testing.capture()`).

Settings use the gateway's own names (JWT_KEYS, JWT_ISSUER, JWT_AUDIENCE, PUBLISH_SECRETS,
CHAT_WEBHOOK_SECRET, TOKEN_MAX_LIFETIME) plus URL, RETRY_FOR and TIMEOUT: in Django one
`FOYER = {...}` dict; elsewhere the environment (FOYER_URL, FOYER_RETRY_FOR, FOYER_TIMEOUT
for the kit's own); or an explicit `Settings(...)`. Without `settings=`, every function uses
`Settings.default()`: Django's when Django is configured, else the environment.

    from foyer_backend import link, mint_token, message, publish
    token = mint_token("staff-7", ["orders:venue-1"], name="Sam", role="staff", ttl=300)
    publish(message("order.created", ["orders:venue-1"], {"order": "o-1"}, id="order-1-created"))
    link("chat:o-1", "inbox:venue-1")

Dependencies: PyJWT. Extras: `eddsa` (cryptography, for Ed25519/ES256 keys and keygen),
`async` (httpx), `django` (Django).
"""
from ._client import Client, channel_info, history, link, links, publish, revoke, unlink
from ._settings import SETTING_NAMES, Settings, load_dev_vars, parse_keys
from ._tokens import generate_ed25519, mint_token, public_jwks
from ._wire import FoyerError, InvalidSignature, batches, fix_ids, message, new_id, sign, verify_signature
from .webhook import verify_webhook

_SETTING_NAMES = SETTING_NAMES  # the name older scripts used

__version__ = "2.0.0"

__all__ = [
    "Client", "FoyerError", "InvalidSignature", "SETTING_NAMES", "Settings", "batches", "channel_info",
    "fix_ids", "generate_ed25519", "history", "link", "links", "load_dev_vars", "message", "mint_token",
    "new_id", "parse_keys", "public_jwks", "publish", "revoke", "sign", "unlink", "verify_signature",
    "verify_webhook",
]
