"""The async client for ASGI code (httpx; `pip install 'foyer-backend[async]'`).

    from foyer_backend.aio import AsyncClient
    async with AsyncClient(settings) as foyer:
        await foyer.publish(message("order.created", ["orders:venue-1"], {...}))
        await foyer.link("chat:o-1001", "inbox:venue-1")
        info = await foyer.channel_info("orders:venue-1")

Same behaviour as the sync `Client`: ids fixed before sending, batches split, network errors,
5xx and 429 retried with the same request and jittered backoff for at most `retry_for`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Iterable, Mapping, Optional, Union

try:
    import httpx
except ImportError as e:  # pragma: no cover
    raise ImportError("foyer_backend.aio needs httpx: pip install 'foyer-backend[async]'") from e

from . import _capture
from . import _wire as w
from ._settings import Settings

log = logging.getLogger("foyer_backend")

__all__ = ["AsyncClient"]


class AsyncClient:
    def __init__(self, settings: Optional[Settings] = None, client: Optional["httpx.AsyncClient"] = None):
        self.settings = settings or Settings.default()
        self._http = client or httpx.AsyncClient()
        self._own = client is None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    async def aclose(self):
        if self._own:
            await self._http.aclose()

    async def publish(self, messages: Union[Mapping, Iterable[Mapping]], retry_for: Optional[float] = None) -> dict:
        msgs = w.fix_ids(messages)
        cap = _capture.current()
        if cap:
            return cap.publish(msgs)
        return await self._in_batches("/publish", (w.publish_body(batch) for batch in w.batches(msgs)), retry_for)

    async def link(self, channel: str, inbox: str, retry_for: Optional[float] = None) -> dict:
        """Links `channel` into `inbox`; the one result (see `foyer_backend.Client.link`)."""
        return (await self.links([{"channel": channel, "inbox": inbox}], retry_for=retry_for))["results"][0]

    async def unlink(self, channel: str, inbox: str, retry_for: Optional[float] = None) -> dict:
        """Removes the link of `channel` into `inbox`; the one result."""
        return (await self.links([{"channel": channel, "inbox": inbox, "remove": True}], retry_for=retry_for))["results"][0]

    async def links(self, entries: Iterable[Any], retry_for: Optional[float] = None) -> dict:
        """`POST /links` for many entries, 100 a request, in order (see `foyer_backend.Client.links`)."""
        entries = w.link_entries(entries)
        cap = _capture.current()
        if cap:
            return cap.link(entries)
        return await self._in_batches("/links", (w.links_body(batch) for batch in w.chunks(entries, w.MAX_LINKS)), retry_for)

    async def _in_batches(self, path: str, bodies: Iterable[bytes], retry_for: Optional[float]) -> dict:
        """POSTs `bodies` to `path` one after another, joining their `results` in order (see
        `foyer_backend.Client._in_batches`)."""
        results: list = []
        for body in bodies:
            try:
                answer = await self.request("POST", path, body, retry_for=retry_for)
            except w.FoyerError as e:
                e.results = results + e.results
                raise
            results.extend(answer.get("results", []))
        return {"results": results}

    async def channel_info(self, channel: str, retry_for: Optional[float] = None) -> dict:
        cap = _capture.current()
        if cap:
            return cap.channel_info(channel)
        return await self.request("GET", w.channel_path(channel), b"", retry_for=retry_for)

    async def history(self, channel: str, since: int = 0, limit: int = 100, retry_for: Optional[float] = None) -> dict:
        cap = _capture.current()
        if cap:
            return cap.history(channel, since, limit)
        return await self.request("GET", w.history_target(channel, since, limit), b"", retry_for=retry_for)

    async def revoke(self, sub: str, channels: Optional[Iterable[str]] = None, retry_for: Optional[float] = None) -> dict:
        body = w.revoke_body(sub, channels)  # channels=[] raises ValueError; None is every channel
        cap = _capture.current()
        if cap:
            return cap.revoke(body)
        return await self.request("POST", "/revoke", body, retry_for=retry_for)

    async def request(self, method: str, target: str, body: bytes, retry_for: Optional[float] = None) -> Any:
        s = self.settings
        base = s.base_url()
        headers = w.request_headers(method, target, body, s.publish_secret())
        budget = w.clamp_retry_for(retry_for, s.retry_for)
        deadline = time.monotonic() + budget
        attempt = 0
        while True:
            attempt += 1
            # One attempt only (retry_for=0, as the outbox sends): the whole TIMEOUT for it.
            timeout = s.timeout if budget == 0 else max(1.0, min(s.timeout, deadline - time.monotonic()))
            wait = None
            try:
                r = await self._http.request(method, base + target, content=body if method == "POST" else None,
                                             headers=headers, timeout=timeout)
            except httpx.TransportError as e:  # connect, read, write, timeout, protocol errors
                error = w.FoyerError(f"{target.split('?')[0]}: {type(e).__name__}: {e}")
            else:
                if 200 <= r.status_code < 300:
                    return json.loads(r.text) if r.text else {}
                error = w.error_from(r.status_code, r.text, target)
                if not w.retryable_status(r.status_code):
                    raise error
                wait = w.retry_after(r.headers) if r.status_code == 429 else None
            delay = w.backoff(attempt) if wait is None else wait
            if time.monotonic() + delay > deadline:
                raise error
            log.warning("foyer: %s %s attempt %d failed (%s); retrying in %.2f s",
                        method, target.split("?")[0], attempt, error, delay)
            await asyncio.sleep(delay)
