"""System checks: `manage.py check` (and runserver, migrate, ...) fails with a clear message
for settings that would otherwise be a 500 at the first token or a publish that never leaves."""
from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from .._settings import FOYER_KEYS, SEND_MODES, Settings, _secrets, django_values, new_name, url_problem

DOCS = "see docs/django.md, \"Configure Django\""


@checks.register("foyer")
def foyer_settings_check(app_configs=None, **kwargs):
    try:
        values, deprecated = django_values(warn=False)
    except ValueError as e:
        return [checks.Error(str(e), hint=DOCS, id="foyer.E001")]
    out = []
    if getattr(settings, "FOYER", None) is None:
        if not deprecated:
            return [checks.Error("settings.FOYER is not set: the Foyer kit has no gateway, keys or secrets",
                                 hint="FOYER = {'URL': ..., 'JWT_KEYS': ..., 'JWT_ISSUER': ..., 'PUBLISH_SECRETS': [...], "
                                      "'GRANTS': ...}; " + DOCS, id="foyer.E001")]
        for old in deprecated:
            out.append(checks.Warning(f"settings.{old} is deprecated (removed in foyer-backend 3.0)",
                                      hint=f"move it into FOYER = {{...}} as {new_name(old)!r}", id="foyer.W001"))
    else:
        for key in sorted(set(values) - set(FOYER_KEYS)):
            out.append(checks.Warning(f"FOYER[{key!r}] is not a setting of the Foyer kit (a typo?)",
                                      hint="known keys: " + ", ".join(FOYER_KEYS), id="foyer.W002"))
    try:
        s = Settings.from_mapping(values, default_url=None)
    except ValueError as e:
        return out + [checks.Error(f"FOYER: {e}", hint=DOCS, id="foyer.E007")]

    problem = url_problem(values.get("URL") or None)
    if problem:
        out.append(checks.Error(f"FOYER['URL'] {problem}", hint="the gateway's base URL, e.g. "
                                "'https://foyer.example.workers.dev' (http://127.0.0.1:8787 under wrangler dev)",
                                id="foyer.E002"))
    if not _secrets(s.publish_secrets):
        out.append(checks.Error("FOYER['PUBLISH_SECRETS'] is not set: the gateway refuses unsigned publishes",
                                hint="a list of the gateway's PUBLISH_SECRETS (the first signs)", id="foyer.E003"))
    try:
        s.signing_key()
    except Exception as e:  # ValueError (no private key, bad JSON), RuntimeError (cryptography missing)
        out.append(checks.Error(f"FOYER['JWT_KEYS'] cannot sign tokens: {e}",
                                hint="the backend holds the private JWK (manage.py foyer_keygen writes a pair); "
                                     "the gateway holds the public JWKS", id="foyer.E004"))
    if not str(s.issuer).strip():
        out.append(checks.Error("FOYER['JWT_ISSUER'] is empty: every token needs the gateway's JWT_ISSUER",
                                id="foyer.E005"))
    if not s.grants:
        out.append(checks.Error("FOYER['GRANTS'] is not set: the token view cannot decide who gets which channels",
                                hint="the dotted path of your hook, e.g. 'shop.foyer.grants'", id="foyer.E006"))
    else:
        try:
            hook = import_string(s.grants)
        except ImportError as e:
            out.append(checks.Error(f"FOYER['GRANTS'] = {s.grants!r} does not import: {e}", id="foyer.E006"))
        else:
            if not callable(hook):
                out.append(checks.Error(f"FOYER['GRANTS'] = {s.grants!r} is not callable", id="foyer.E006"))
    if not 0 < s.token_ttl <= s.max_lifetime:
        out.append(checks.Error(f"FOYER['TOKEN_TTL'] = {s.token_ttl} must be within 1..={s.max_lifetime} "
                                "(TOKEN_MAX_LIFETIME, the gateway's cap)", id="foyer.E007"))
    if s.send not in SEND_MODES:
        out.append(checks.Error(f"FOYER['SEND'] = {s.send!r} must be one of {', '.join(SEND_MODES)}",
                                id="foyer.E008"))
    return out
