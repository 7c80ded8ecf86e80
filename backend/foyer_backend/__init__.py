"""Foyer backend kit: tokens, signed publishes with retries, channel reads, revocation and
webhook verification for the Foyer gateway (docs/protocol.md), plus a Django app
(`foyer_backend.django`) and an async client (`foyer_backend.aio`).

Settings use the gateway's own names (JWT_KEYS, JWT_ISSUER, JWT_AUDIENCE, PUBLISH_SECRETS,
CHAT_WEBHOOK_SECRET, TOKEN_MAX_LIFETIME) plus FOYER_URL, FOYER_RETRY_FOR and FOYER_TIMEOUT,
from explicit `Settings(...)`, the environment (`Settings.from_env()`, the default) or
Django settings (`Settings.from_django()`).

    from foyer_backend import mint_token, message, publish
    token = mint_token("staff-7", ["orders:venue-1"], name="Sam", role="staff", ttl=300)
    publish(message("order.created", ["orders:venue-1"], {"order": "o-1"}, id="order-1-created"))

Dependencies: PyJWT. Extras: `eddsa` (cryptography, for Ed25519/ES256 keys and keygen),
`async` (httpx), `django` (Django).
"""
from ._client import Client, channel_info, history, publish, revoke
from ._settings import SETTING_NAMES, Settings, load_dev_vars, parse_keys
from ._tokens import generate_ed25519, mint_token, public_jwks
from ._wire import FoyerError, InvalidSignature, batches, fix_ids, message, new_id, sign, verify_signature
from .webhook import verify_webhook

_SETTING_NAMES = SETTING_NAMES  # the name older scripts used

__version__ = "1.1.0"

__all__ = [
    "Client", "FoyerError", "InvalidSignature", "SETTING_NAMES", "Settings", "batches", "channel_info",
    "fix_ids", "generate_ed25519", "history", "load_dev_vars", "message", "mint_token", "new_id",
    "parse_keys", "public_jwks", "publish", "revoke", "sign", "verify_signature", "verify_webhook",
]
