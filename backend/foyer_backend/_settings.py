"""Settings: one place for everything the kit needs to reach one gateway.

Inside a Django project they come from one `FOYER = {...}` dict in Django settings (the
gateway's names for what the two share, short names for the kit's own); elsewhere from the
environment, under the gateway's names (`Settings.from_env()`); or explicitly
(`Settings(...)`). `Settings.default()` picks: Django's when Django is configured, else the
environment. The old top-level Django names (FOYER_URL, JWT_KEYS, ..., FOYER_GRANTS) still
work when there is no `FOYER` dict, with a DeprecationWarning; they go in 3.0."""
from __future__ import annotations

import json
import os
import re
import sys
import urllib.parse
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

# FOYER dict key -> its name in the environment (and the old top-level Django setting).
# The first seven are the gateway's own names; the others are the kit's.
ENV_NAMES = {
    "URL": "FOYER_URL",
    "JWT_KEYS": "JWT_KEYS",
    "JWT_ISSUER": "JWT_ISSUER",
    "JWT_AUDIENCE": "JWT_AUDIENCE",
    "PUBLISH_SECRETS": "PUBLISH_SECRETS",
    "CHAT_WEBHOOK_SECRET": "CHAT_WEBHOOK_SECRET",
    "TOKEN_MAX_LIFETIME": "TOKEN_MAX_LIFETIME",
    "RETRY_FOR": "FOYER_RETRY_FOR",
    "TIMEOUT": "FOYER_TIMEOUT",
}
# Keys that only mean something in Django, with their old top-level names.
DJANGO_ONLY = {
    "GRANTS": "FOYER_GRANTS",
    "TOKEN_TTL": "FOYER_TOKEN_TTL",
    "SEND": "FOYER_PUBLISH_BACKGROUND",  # was a bool: True = "thread", False = "inline"
}
FOYER_KEYS = tuple(ENV_NAMES) + tuple(DJANGO_ONLY)

# The environment names, as scripts read them (`scripts/foyer`).
SETTING_NAMES = tuple(ENV_NAMES.values())

# Where `publish_on_commit` rows are sent from: a thread of the process that committed them
# (at once, then with backoff), the on-commit hook itself, or only `manage.py foyer_outbox`.
SEND_MODES = ("thread", "inline", "worker")

# The gateway `wrangler dev` listens on. Used only by local tools that ask for it
# (`Settings.from_mapping(..., default_url=DEFAULT_URL)`): a deployed backend with no URL
# configured gets an error, never a silent local default.
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


def url_problem(url: Any) -> Optional[str]:
    """Why `url` is not a usable gateway base URL (None when it is)."""
    if not url:
        return "is not set"
    if not isinstance(url, str):
        return f"must be a string, not {type(url).__name__}"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises for a malformed port)
    except ValueError as e:
        return f"is malformed ({e})"
    if parts.scheme not in ("http", "https"):
        return f"must start with http:// or https:// (got {url!r})"
    if not parts.hostname:
        return f"has no host (got {url!r})"
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        return f"must be a plain base URL without query, fragment or spaces (got {url!r})"
    return None


# Django settings

_warned: set = set()


def _django_configured() -> bool:
    conf = sys.modules.get("django.conf")  # never imports Django: only when the program did
    try:
        return bool(conf and conf.settings.configured)
    except Exception:  # pragma: no cover
        return False


def django_values(warn: bool = True) -> Tuple[Dict[str, Any], List[str]]:
    """(the kit's settings by FOYER key, the deprecated top-level names they came from).

    With a `FOYER` dict, exactly that dict (no environment fallback: what settings.py says is
    what runs). Without one, the old top-level names, each falling back to the environment
    variable of the gateway's name, as in 1.x; each old name read warns once."""
    from django.conf import settings

    foyer = getattr(settings, "FOYER", None)
    if foyer is not None:
        if not isinstance(foyer, Mapping):
            raise ValueError(f"settings.FOYER must be a dict, not {type(foyer).__name__}")
        return dict(foyer), []
    values: Dict[str, Any] = {}
    used: List[str] = []
    for key, old in list(ENV_NAMES.items()) + list(DJANGO_ONLY.items()):
        v = getattr(settings, old, None)
        if v is not None:
            used.append(old)
        elif key in ENV_NAMES and os.environ.get(old):
            v = os.environ[old]
        if v is not None:
            values[key] = v
    if "SEND" in values:
        values["SEND"] = "thread" if values["SEND"] else "inline"
    if warn:
        for old in used:
            if old not in _warned:
                _warned.add(old)
                warnings.warn(f"settings.{old} is deprecated (removed in foyer-backend 3.0): "
                              f"put it in FOYER = {{...}} as {new_name(old)!r}", DeprecationWarning, stacklevel=4)
    return values, used


def new_name(old: str) -> str:
    for key, name in list(ENV_NAMES.items()) + list(DJANGO_ONLY.items()):
        if name == old:
            return key
    return old


@dataclass
class Settings:
    """Everything the kit needs to reach one gateway. (FOYER key / environment name.)

    jwt_keys         JWT_KEYS: the backend's signing key(s), a JWKS or one JWK, JSON or dict.
                     The first key with private material (`k` for HS256, `d` for EdDSA/ES256)
                     signs. The gateway holds only the public half (PROTOCOL: no `d` there).
    issuer           JWT_ISSUER, the `iss` the gateway expects.
    audience         JWT_AUDIENCE, default "foyer".
    publish_secrets  PUBLISH_SECRETS, a list (or a comma-separated string); the first signs.
    url              URL / FOYER_URL, the gateway's base URL. Required: no default.
    max_lifetime     TOKEN_MAX_LIFETIME, the gateway's cap on a token's lifetime (default 900 s).
    webhook_secrets  CHAT_WEBHOOK_SECRET, a list or comma-separated; any one verifies.
    retry_for        RETRY_FOR / FOYER_RETRY_FOR: seconds a request is retried for (default 30,
                     at most 240).
    timeout          TIMEOUT / FOYER_TIMEOUT: seconds for one attempt (default 10).
    grants           GRANTS (Django): dotted path of the token view's grants hook.
    token_ttl        TOKEN_TTL (Django): lifetime of the tokens the token view mints (300 s).
    send             SEND (Django): who sends `publish_on_commit` rows, one of "thread"
                     (default), "inline", "worker" (docs/django.md, "The outbox").
    """

    jwt_keys: Any = ""
    issuer: str = ""
    audience: str = "foyer"
    publish_secrets: Any = ""
    url: Optional[str] = None
    max_lifetime: int = 900
    webhook_secrets: Any = ""
    retry_for: float = 30.0
    timeout: float = 10.0
    grants: Optional[str] = None
    token_ttl: int = 300
    send: str = "thread"

    def __post_init__(self):
        self.url = str(self.url).rstrip("/") if self.url else ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], default_url: Optional[str] = DEFAULT_URL) -> "Settings":
        """From FOYER keys (`URL`, `RETRY_FOR`, ...) or the environment's names (`FOYER_URL`,
        `FOYER_RETRY_FOR`, ...). `default_url` is for local tools reading `.dev.vars`; the
        environment and Django never default the URL."""
        def get(key, default=None):
            for name in (key, ENV_NAMES.get(key), DJANGO_ONLY.get(key)):
                v = values.get(name) if name else None
                if v is not None and v != "":
                    return v
            return default

        def number(key, default, kind=float):
            v = get(key, default)
            try:
                return kind(v)
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be a number, not {v!r}") from None

        return cls(
            jwt_keys=get("JWT_KEYS", ""),
            issuer=str(get("JWT_ISSUER", "")),
            audience=str(get("JWT_AUDIENCE", "foyer")),
            publish_secrets=get("PUBLISH_SECRETS", ""),
            url=get("URL", default_url),
            max_lifetime=number("TOKEN_MAX_LIFETIME", 900, int),
            webhook_secrets=get("CHAT_WEBHOOK_SECRET", ""),
            retry_for=number("RETRY_FOR", 30),
            timeout=number("TIMEOUT", 10),
            grants=get("GRANTS"),
            token_ttl=number("TOKEN_TTL", 300, int),
            send=str(get("SEND", "thread")),
        )

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Settings":
        """The gateway's names from the environment (FOYER_URL is required to send anything)."""
        env = os.environ if environ is None else environ
        return cls.from_mapping({k: env[k] for k in SETTING_NAMES if k in env}, default_url=None)

    @classmethod
    def from_django(cls) -> "Settings":
        """Django's `FOYER` dict (or, deprecated, the old top-level names)."""
        return cls.from_mapping(django_values()[0], default_url=None)

    @classmethod
    def default(cls) -> "Settings":
        """What every function of the kit uses without an explicit `settings=`: Django's
        settings when Django is configured, else the environment."""
        return cls.from_django() if _django_configured() else cls.from_env()

    # Derived values

    def keys(self) -> list:
        return parse_keys(self.jwt_keys)

    def base_url(self) -> str:
        """The gateway's URL, or a ValueError naming the setting when there is none."""
        problem = url_problem(self.url)
        if problem:
            raise ValueError(f"the gateway's URL {problem}: set FOYER['URL'] in Django settings "
                             "(FOYER_URL in the environment, or Settings(url=...))")
        return self.url

    def publish_secret(self) -> str:
        secrets = _secrets(self.publish_secrets)
        if not secrets:
            raise ValueError("PUBLISH_SECRETS is not set (FOYER['PUBLISH_SECRETS'] in Django): the gateway refuses unsigned requests")
        return secrets[0]

    def webhook_secret_list(self) -> list:
        return _secrets(self.webhook_secrets)

    def signing_key(self):
        """(algorithm, key, kid) of the first JWK that can sign."""
        from ._tokens import signing_key

        return signing_key(self.keys())
