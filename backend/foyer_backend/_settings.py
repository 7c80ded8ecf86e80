"""Settings: the gateway's own names, from explicit values, the environment or Django settings."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

# Names shared with the gateway's configuration, then the kit's own.
SETTING_NAMES = (
    "JWT_KEYS",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "PUBLISH_SECRETS",
    "FOYER_URL",
    "TOKEN_MAX_LIFETIME",
    "CHAT_WEBHOOK_SECRET",
    "FOYER_RETRY_FOR",
    "FOYER_TIMEOUT",
)

DEFAULT_URL = "http://127.0.0.1:8787"


def load_dev_vars(path: str) -> dict:
    """Reads a dotenv-style file such as the gateway's `.dev.vars` (KEY='v' / KEY="v" / KEY=v)."""
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"""^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:'(.*)'|"(.*)"|(.*?))\s*$""", line)
            if m and not line.lstrip().startswith("#"):
                values[m.group(1)] = next(g for g in m.groups()[1:] if g is not None)
    return values


def parse_keys(value: Union[str, Mapping, None]) -> list:
    """JWT_KEYS as a list of JWKs. Accepts a JWKS (`{"keys": [...]}`) or one JWK, each either
    as a JSON string or as a dict (as Django settings usually hold it)."""
    if value is None or value == "":
        return []
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise ValueError("JWT_KEYS must be a JWKS ({\"keys\": [...]}) or a single JWK")
    if "keys" in value:
        keys = value["keys"]
        if not isinstance(keys, list):
            raise ValueError("JWT_KEYS: \"keys\" must be a list")
        return [dict(k) for k in keys]
    if "kty" in value:
        return [dict(value)]
    raise ValueError("JWT_KEYS must be a JWKS ({\"keys\": [...]}) or a single JWK")


def _secrets(value: Union[str, list, tuple, None]) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(s).strip() for s in value if str(s).strip()]
    return [s.strip() for s in str(value).split(",") if s.strip()]


@dataclass
class Settings:
    """Everything the kit needs to reach one gateway.

    jwt_keys         JWT_KEYS: the backend's signing key(s), a JWKS or one JWK, JSON or dict.
                     The first key with private material (`k` for HS256, `d` for EdDSA/ES256)
                     signs. The gateway holds only the public half (PROTOCOL: no `d` there).
    issuer           JWT_ISSUER, the `iss` the gateway expects.
    audience         JWT_AUDIENCE, default "foyer".
    publish_secrets  PUBLISH_SECRETS, comma-separated (or a list); the first signs requests.
    url              FOYER_URL, the gateway's base URL.
    max_lifetime     TOKEN_MAX_LIFETIME, the gateway's cap on a token's lifetime (default 900 s).
    webhook_secrets  CHAT_WEBHOOK_SECRET, comma-separated (or a list); any one verifies.
    retry_for        FOYER_RETRY_FOR: seconds a request is retried for (default 30, at most 240).
    timeout          FOYER_TIMEOUT: seconds for one attempt (default 10).
    """

    jwt_keys: Any = ""
    issuer: str = ""
    audience: str = "foyer"
    publish_secrets: Any = ""
    url: str = DEFAULT_URL
    max_lifetime: int = 900
    webhook_secrets: Any = ""
    retry_for: float = 30.0
    timeout: float = 10.0

    def __post_init__(self):
        self.url = (self.url or DEFAULT_URL).rstrip("/")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "Settings":
        def get(name, default=None):
            v = values.get(name)
            return default if v is None or v == "" else v

        return cls(
            jwt_keys=get("JWT_KEYS", ""),
            issuer=str(get("JWT_ISSUER", "")),
            audience=str(get("JWT_AUDIENCE", "foyer")),
            publish_secrets=get("PUBLISH_SECRETS", ""),
            url=str(get("FOYER_URL", DEFAULT_URL)),
            max_lifetime=int(get("TOKEN_MAX_LIFETIME", 900)),
            webhook_secrets=get("CHAT_WEBHOOK_SECRET", ""),
            retry_for=float(get("FOYER_RETRY_FOR", 30)),
            timeout=float(get("FOYER_TIMEOUT", 10)),
        )

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Settings":
        env = os.environ if environ is None else environ
        return cls.from_mapping({k: env[k] for k in SETTING_NAMES if k in env})

    @classmethod
    def from_django(cls) -> "Settings":
        """Django settings of the same names, each falling back to the environment."""
        from django.conf import settings  # Django is optional: imported only here

        return cls.from_mapping({k: getattr(settings, k, None) if getattr(settings, k, None) is not None
                                 else os.environ.get(k) for k in SETTING_NAMES})

    # Derived values

    def keys(self) -> list:
        return parse_keys(self.jwt_keys)

    def publish_secret(self) -> str:
        secrets = _secrets(self.publish_secrets)
        if not secrets:
            raise ValueError("PUBLISH_SECRETS is not set: the gateway refuses unsigned requests")
        return secrets[0]

    def webhook_secret_list(self) -> list:
        return _secrets(self.webhook_secrets)

    def signing_key(self):
        """(algorithm, key, kid) of the first JWK that can sign."""
        from ._tokens import signing_key

        return signing_key(self.keys())
