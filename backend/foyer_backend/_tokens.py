"""Tokens the gateway accepts (PROTOCOL "Tokens"), and Ed25519 key pairs for production."""
from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Optional, Sequence

import jwt  # PyJWT

from . import _capture
from ._settings import Settings
from ._wire import channel_list

_b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# Signs tokens under capture() when the settings hold no key: a test value, never configured
# in a gateway.
TEST_KEY = b"foyer-backend testing key, not for any gateway!!"


def signing_key(keys: list):
    """(algorithm, key, kid) of the first JWK with private material."""
    for jwk in keys:
        alg, kid = jwk.get("alg"), jwk.get("kid")
        if jwk.get("kty") == "oct" and "k" in jwk:
            return alg or "HS256", _unb64(jwk["k"]), kid
        if "d" in jwk:
            try:
                return alg, jwt.PyJWK.from_dict(jwk).key, kid
            except jwt.exceptions.PyJWKError as e:
                if "cryptography" in str(e).lower() or "not available" in str(e).lower():
                    raise RuntimeError(
                        f"JWT_KEYS: a {jwk.get('kty')} key needs the `cryptography` package: pip install 'foyer-backend[eddsa]'"
                    ) from e
                raise
    raise ValueError("JWT_KEYS has no key with private material to sign with (an `oct` key with `k`, or a JWK with `d`)")


def mint_token(
    sub: str,
    channels: Sequence[str],
    publish: Sequence[str] = (),
    name: Optional[str] = None,
    role: Optional[str] = None,
    ttl: int = 300,
    settings: Optional[Settings] = None,
) -> str:
    """A short-lived token for `sub` that may subscribe to `channels` and post to `publish`
    (chat channels). `ttl` must not exceed the gateway's TOKEN_MAX_LIFETIME. Channels are
    checked here (a string where a list is due is a TypeError, a malformed name a ValueError),
    so a mistake fails in the backend, not as a 4401 at the gateway.

    Under `foyer_backend.testing.capture()` the claims are recorded; without a signing key
    configured, the token is then signed with a test key no gateway accepts."""
    s = settings or Settings.default()
    if not isinstance(sub, str) or not sub:
        raise ValueError("sub must be a non-empty string")
    channels = channel_list(channels, "channels")
    publish = channel_list(publish, "publish")
    if len(json.dumps(sub)) > 256:
        raise ValueError("sub is longer than the gateway accepts (256 bytes of JSON)")
    if ttl > s.max_lifetime:
        raise ValueError(f"ttl {ttl} exceeds the gateway's maximum lifetime {s.max_lifetime}")
    cap = _capture.current()
    if not s.issuer and not cap:
        raise ValueError("JWT_ISSUER is not set (FOYER['JWT_ISSUER'] in Django)")
    now = int(time.time())
    claims = {"sub": sub, "iss": s.issuer, "aud": s.audience, "iat": now, "exp": now + int(ttl),
              "channels": list(channels), "publish": list(publish)}
    if name is not None:
        claims["name"] = name
    if role is not None:
        claims["role"] = role
    if cap:
        cap.token(claims)
        try:
            alg, key, kid = s.signing_key()
        except (ValueError, RuntimeError):
            alg, key, kid = "HS256", TEST_KEY, "foyer-testing"
    else:
        alg, key, kid = s.signing_key()
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


def generate_ed25519(kid: Optional[str] = None):
    """A new Ed25519 pair: (private JWK for the backend's JWT_KEYS, public JWKS for the
    gateway's JWT_KEYS). Needs `cryptography` (the `eddsa` extra)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:  # pragma: no cover
        raise RuntimeError("Ed25519 keys need `cryptography`: pip install 'foyer-backend[eddsa]'") from e
    kid = kid or time.strftime("%Y-%m-%d-") + secrets.token_hex(3)
    key = ed25519.Ed25519PrivateKey.generate()
    d = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    x = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public = {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": kid, "x": _b64(x)}
    private = dict(public, d=_b64(d))
    return private, {"keys": [public]}


def public_jwks(keys) -> dict:
    """The gateway's JWT_KEYS for a backend's keys: asymmetric keys without `d`. HS256 (`oct`)
    keys are shared secrets and are kept as they are (local development only)."""
    from ._settings import parse_keys

    out = []
    for jwk in parse_keys(keys):
        out.append(dict(jwk) if jwk.get("kty") == "oct" else {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")})
    return {"keys": out}
