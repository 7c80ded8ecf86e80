"""Foyer backend kit: mint tokens and sign publishes from a Python (Django) backend.

Standard library + PyJWT only. Settings use the gateway's own names and come from explicit
arguments, then the environment (or Django settings, via `Settings.from_django()`):

    JWT_KEYS          the JWKS; the first key with a private part ("k" for HS256, "d" for
                      EdDSA/ES256) signs. In production the backend holds the private JWK
                      and the gateway only the public one.
    JWT_ISSUER        the `iss` the gateway expects
    JWT_AUDIENCE      default "foyer"
    PUBLISH_SECRETS   comma-separated; the first signs
    FOYER_URL         the gateway, e.g. https://foyer.example.workers.dev

    from foyer_backend import mint_token, publish
    token = mint_token("staff-7", ["orders:venue-1"], name="Sam", role="staff", ttl=600)
    publish([{"id": "evt-1", "channels": ["orders:venue-1"], "event": "order.created", "data": {...}}])
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

import jwt  # PyJWT

__all__ = ["Settings", "load_dev_vars", "mint_token", "sign", "publish", "revoke"]

_SETTING_NAMES = ("JWT_KEYS", "JWT_ISSUER", "JWT_AUDIENCE", "PUBLISH_SECRETS", "FOYER_URL", "TOKEN_MAX_LIFETIME")


def load_dev_vars(path: str) -> dict:
    """Reads a dotenv-style file such as the gateway's `.dev.vars` (KEY='v' / KEY="v" / KEY=v)."""
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"""^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:'(.*)'|"(.*)"|(.*?))\s*$""", line)
            if m and not line.lstrip().startswith("#"):
                values[m.group(1)] = next(g for g in m.groups()[1:] if g is not None)
    return values


@dataclass
class Settings:
    jwt_keys: str = ""
    issuer: str = ""
    audience: str = "foyer"
    publish_secrets: str = ""
    url: str = "http://127.0.0.1:8787"
    max_lifetime: int = 900

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> "Settings":
        return cls(
            jwt_keys=values.get("JWT_KEYS", ""),
            issuer=values.get("JWT_ISSUER", ""),
            audience=values.get("JWT_AUDIENCE") or "foyer",
            publish_secrets=values.get("PUBLISH_SECRETS", ""),
            url=(values.get("FOYER_URL") or "http://127.0.0.1:8787").rstrip("/"),
            max_lifetime=int(values.get("TOKEN_MAX_LIFETIME") or 900),
        )

    @classmethod
    def from_env(cls) -> "Settings":
        return cls.from_mapping({k: os.environ[k] for k in _SETTING_NAMES if k in os.environ})

    @classmethod
    def from_django(cls) -> "Settings":
        from django.conf import settings  # imported lazily: Django is optional

        return cls.from_mapping({k: str(getattr(settings, k)) for k in _SETTING_NAMES if hasattr(settings, k)})

    def signing_key(self):
        """(algorithm, key, kid) of the first JWK that can sign."""
        for jwk in json.loads(self.jwt_keys).get("keys", []):
            alg, kid = jwk.get("alg"), jwk.get("kid")
            if jwk.get("kty") == "oct" and "k" in jwk:
                return alg, base64.urlsafe_b64decode(jwk["k"] + "=" * (-len(jwk["k"]) % 4)), kid
            if "d" in jwk:
                return alg, jwt.PyJWK.from_dict(jwk).key, kid
        raise ValueError("JWT_KEYS has no key with a private part to sign with")


def _settings(settings: Optional[Settings]) -> Settings:
    return settings or Settings.from_env()


def mint_token(
    sub: str,
    channels: Sequence[str],
    publish: Sequence[str] = (),
    name: Optional[str] = None,
    role: Optional[str] = None,
    ttl: int = 600,
    settings: Optional[Settings] = None,
) -> str:
    """A short-lived token for `sub` that may subscribe to `channels` (and post to `publish`)."""
    s = _settings(settings)
    if ttl > s.max_lifetime:
        raise ValueError(f"ttl {ttl} exceeds the gateway's maximum lifetime {s.max_lifetime}")
    alg, key, kid = s.signing_key()
    now = int(time.time())
    claims = {"sub": sub, "iss": s.issuer, "aud": s.audience, "iat": now, "exp": now + ttl,
              "channels": list(channels), "publish": list(publish)}
    if name is not None:
        claims["name"] = name
    if role is not None:
        claims["role"] = role
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


def sign(path: str, body: bytes, secret: str, t: Optional[int] = None) -> str:
    """The `X-Foyer-Signature` header value for `body` POSTed to `path`."""
    t = int(time.time()) if t is None else int(t)
    mac = hmac.new(secret.encode(), f"{t}.{path}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def _post(path: str, payload: dict, settings: Optional[Settings], timeout: float) -> dict:
    s = _settings(settings)
    secret = s.publish_secrets.split(",")[0].strip()
    if not secret:
        raise ValueError("PUBLISH_SECRETS is not set")
    body = json.dumps(payload, separators=(",", ":")).encode()
    req = urllib.request.Request(s.url + path, data=body, method="POST", headers={
        "Content-Type": "application/json", "X-Foyer-Signature": sign(path, body, secret)})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{path} answered {e.code}: {e.read().decode(errors='replace')}") from None


def publish(events: Iterable[dict], settings: Optional[Settings] = None, timeout: float = 10) -> dict:
    """Publishes events (each with id, channels, event, data). A 500 is safe to retry as is."""
    messages = [dict(e, id=e.get("id") or f"evt-{uuid.uuid4().hex}") for e in events]
    payload = messages[0] if len(messages) == 1 else {"messages": messages}
    return _post("/publish", payload, settings, timeout)


def revoke(sub: str, channels: Optional[Sequence[str]] = None, settings: Optional[Settings] = None, timeout: float = 10) -> dict:
    """Closes `sub`'s sockets (in `channels`, or everywhere) and refuses their older tokens."""
    payload = {"sub": sub} if channels is None else {"sub": sub, "channels": list(channels)}
    return _post("/revoke", payload, settings, timeout)
