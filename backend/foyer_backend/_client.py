"""The synchronous client (standard library HTTP): publish, read channels, revoke."""
from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any, Iterable, Mapping, Optional, Union

from . import _wire as w
from ._settings import Settings

log = logging.getLogger("foyer_backend")


class Client:
    """One gateway. Every call retries network errors, 5xx and 429 with jittered exponential
    backoff, resending the same request (same body, same signature) for at most `retry_for`
    seconds (default: the settings' FOYER_RETRY_FOR, 30 s), then raises `FoyerError`. Other
    4xx answers raise at once: they mean the request itself is wrong."""

    def __init__(self, settings: Optional[Settings] = None, sleep=time.sleep, clock=time.monotonic):
        self.settings = settings or Settings.from_env()
        self._sleep, self._clock = sleep, clock

    # The endpoints

    def publish(self, messages: Union[Mapping, Iterable[Mapping]], retry_for: Optional[float] = None) -> dict:
        """Publishes one message or many; see `foyer_backend.publish`."""
        msgs = w.fix_ids(messages)
        results = []
        for batch in w.batches(msgs):
            try:
                answer = self.request("POST", "/publish", w.publish_body(batch), retry_for=retry_for)
            except w.FoyerError as e:
                e.results = results + e.results
                raise
            results.extend(answer.get("results", []))
        return {"results": results}

    def channel_info(self, channel: str, retry_for: Optional[float] = None) -> dict:
        """`GET /channels/{kind}/{key}`: `{"channel", "seq", "sockets", "users", "truncated"}`."""
        return self.request("GET", w.channel_path(channel), b"", retry_for=retry_for)

    def history(self, channel: str, since: int = 0, limit: int = 100, retry_for: Optional[float] = None) -> dict:
        """`GET /channels/{kind}/{key}/history?since=N&limit=M`: `{"channel", "seq", "reset", "events"}`."""
        return self.request("GET", w.history_target(channel, since, limit), b"", retry_for=retry_for)

    def revoke(self, sub: str, channels: Optional[Iterable[str]] = None, retry_for: Optional[float] = None) -> dict:
        """`POST /revoke`: closes `sub`'s sockets (in `channels`, or all) and refuses its tokens
        issued up to now. Retries keep the first signature, hence the revocation's time."""
        payload: dict = {"sub": sub}
        if channels is not None:
            payload["channels"] = list(channels)
        return self.request("POST", "/revoke", w._dumps(payload), retry_for=retry_for)

    # One signed request, retried

    def request(self, method: str, target: str, body: bytes, retry_for: Optional[float] = None) -> Any:
        s = self.settings
        headers = w.request_headers(method, target, body, s.publish_secret())
        budget = w.clamp_retry_for(retry_for, s.retry_for)
        deadline = self._clock() + budget
        attempt = 0
        while True:
            attempt += 1
            timeout = max(1.0, min(s.timeout, deadline - self._clock()))
            wait = None
            try:
                status, text, resp_headers = self._send(method, s.url + target, body if method == "POST" else None, headers, timeout)
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, cut short
                error = w.FoyerError(f"{target.split('?')[0]}: {type(e).__name__}: {e}")
            else:
                if 200 <= status < 300:
                    return json.loads(text) if text else {}
                error = w.error_from(status, text, target)
                if not w.retryable_status(status):
                    raise error
                wait = w.retry_after(resp_headers) if status == 429 else None
            delay = w.backoff(attempt) if wait is None else wait
            if self._clock() + delay > deadline:
                raise error
            log.warning("foyer: %s %s attempt %d failed (%s); retrying in %.2f s",
                        method, target.split("?")[0], attempt, error, delay)
            self._sleep(delay)

    def _send(self, method, url, data, headers, timeout):
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace"), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace"), e.headers


def _client(settings: Optional[Settings]) -> Client:
    return Client(settings)


def publish(messages: Union[Mapping, Iterable[Mapping]], settings: Optional[Settings] = None,
            retry_for: Optional[float] = None) -> dict:
    """Publishes one message (a dict) or many, each `{"id", "channels", "event", "data"}`.

    - A message without an `id` gets one now, written into the caller's dict: publishing the
      same object again never delivers it twice. Build messages with `message()` to fix the
      id explicitly; use a domain id (`f"order-{pk}-{status}"`) to dedupe across processes.
    - More than 100 messages, or more than 100 distinct channels, are split into several
      requests, in order.
    - Network errors, 5xx and 429 are retried with the same body for up to `retry_for`
      seconds. On failure `FoyerError.results` holds the results of the requests that did
      succeed; publishing the same messages again is safe.

    Returns `{"results": [{"id", "channel", "seq", "delivered", "duplicate"}, ...]}`."""
    return _client(settings).publish(messages, retry_for=retry_for)


def channel_info(channel: str, settings: Optional[Settings] = None, retry_for: Optional[float] = None) -> dict:
    """A channel's latest `seq`, open sockets and users (PROTOCOL "Reading channels")."""
    return _client(settings).channel_info(channel, retry_for=retry_for)


def history(channel: str, since: int = 0, limit: int = 100, settings: Optional[Settings] = None,
            retry_for: Optional[float] = None) -> dict:
    """A channel's retained events after `since`, at most `limit` (1..=1000)."""
    return _client(settings).history(channel, since, limit, retry_for=retry_for)


def revoke(sub: str, channels: Optional[Iterable[str]] = None, settings: Optional[Settings] = None,
           retry_for: Optional[float] = None) -> dict:
    """Closes `sub`'s sockets (in `channels`, or everywhere) and refuses its older tokens."""
    return _client(settings).revoke(sub, channels, retry_for=retry_for)
