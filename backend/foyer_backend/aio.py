"""The async client for ASGI code (httpx; `pip install 'foyer-backend[async]'`).

    from foyer_backend.aio import AsyncClient
    async with AsyncClient(settings) as foyer:
        await foyer.publish(message("order.created", ["orders:venue-1"], {...}))
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

from . import _wire as w
from ._settings import Settings

log = logging.getLogger("foyer_backend")

__all__ = ["AsyncClient"]


class AsyncClient:
    def __init__(self, settings: Optional[Settings] = None, client: Optional["httpx.AsyncClient"] = None):
        self.settings = settings or Settings.from_env()
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
        results = []
        for batch in w.batches(msgs):
            try:
                answer = await self.request("POST", "/publish", w.publish_body(batch), retry_for=retry_for)
            except w.FoyerError as e:
                e.results = results + e.results
                raise
            results.extend(answer.get("results", []))
        return {"results": results}

    async def channel_info(self, channel: str, retry_for: Optional[float] = None) -> dict:
        return await self.request("GET", w.channel_path(channel), b"", retry_for=retry_for)

    async def history(self, channel: str, since: int = 0, limit: int = 100, retry_for: Optional[float] = None) -> dict:
        return await self.request("GET", w.history_target(channel, since, limit), b"", retry_for=retry_for)

    async def revoke(self, sub: str, channels: Optional[Iterable[str]] = None, retry_for: Optional[float] = None) -> dict:
        payload: dict = {"sub": sub}
        if channels is not None:
            payload["channels"] = list(channels)
        return await self.request("POST", "/revoke", w._dumps(payload), retry_for=retry_for)

    async def request(self, method: str, target: str, body: bytes, retry_for: Optional[float] = None) -> Any:
        s = self.settings
        headers = w.request_headers(method, target, body, s.publish_secret())
        deadline = time.monotonic() + w.clamp_retry_for(retry_for, s.retry_for)
        attempt = 0
        while True:
            attempt += 1
            timeout = max(1.0, min(s.timeout, deadline - time.monotonic()))
            wait = None
            try:
                r = await self._http.request(method, s.url + target, content=body if method == "POST" else None,
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
