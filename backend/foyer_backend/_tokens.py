"""Tokens the gateway accepts (PROTOCOL "Tokens"), and Ed25519 key pairs for production."""
from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Optional, Sequence

import jwt  # PyJWT

from ._settings import Settings

_b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


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
    (chat channels). `ttl` must not exceed the gateway's TOKEN_MAX_LIFETIME."""
    s = settings or Settings.from_env()
    if not sub:
        raise ValueError("sub must be a non-empty string")
    if len(json.dumps(sub)) > 256:
        raise ValueError("sub is longer than the gateway accepts (256 bytes of JSON)")
    if ttl > s.max_lifetime:
        raise ValueError(f"ttl {ttl} exceeds the gateway's maximum lifetime {s.max_lifetime}")
    if not s.issuer:
        raise ValueError("JWT_ISSUER is not set")
    alg, key, kid = s.signing_key()
    now = int(time.time())
    claims = {"sub": sub, "iss": s.issuer, "aud": s.audience, "iat": now, "exp": now + int(ttl),
              "channels": list(channels), "publish": list(publish)}
    if name is not None:
        claims["name"] = name
    if role is not None:
        claims["role"] = role
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
