"""The token view: a short-lived token for whoever this request is, as the FOYER["GRANTS"] hook decides."""
from __future__ import annotations

import functools

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse, JsonResponse
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from .._tokens import mint_token
from . import Grant, foyer_settings


@functools.lru_cache(maxsize=8)
def _hook(path: str):
    return import_string(path)


def grants_hook(settings=None):
    path = (settings or foyer_settings()).grants
    if not path:
        raise ImproperlyConfigured("FOYER['GRANTS'] must name your grants hook, e.g. 'shop.foyer.grants'")
    try:
        return _hook(path)
    except ImportError as e:
        raise ImproperlyConfigured(f"FOYER['GRANTS'] = {path!r} does not import: {e}") from e


def checked_grant(result, path: str):
    """The hook's result when it is a Grant or None; else a clear ImproperlyConfigured."""
    if result is None or isinstance(result, Grant):
        return result
    hint = " (build it with Grant(sub=..., channels=[...]))" if isinstance(result, dict) else ""
    raise ImproperlyConfigured(f"the grants hook {path} returned {type(result).__name__}{hint}; "
                               "it must return a foyer_backend.django.Grant or None")


@never_cache
@require_http_methods(["GET", "POST"])
def token(request):
    """200 text/plain: a token for the channels the hook grants this request (a logged-in user
    or an anonymous session). 403 when the hook grants nothing. Cache-Control: no-store.

    The browser client calls it as `getToken: async () => (await fetch(url)).text()`: any
    non-2xx answer makes the client retry later, so a 403 never loops fast."""
    s = foyer_settings()
    grant = checked_grant(grants_hook(s)(request), s.grants)
    if grant is None or not grant.channels:
        return JsonResponse({"error": "forbidden", "message": "no channels for this session"}, status=403)
    tok = mint_token(grant.sub, list(grant.channels), list(grant.publish), grant.name, grant.role, ttl=s.token_ttl,
                     settings=s)
    response = HttpResponse(tok, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response
