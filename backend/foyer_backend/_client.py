"""The synchronous client (standard library HTTP): publish, link, read channels, revoke."""
from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any, Iterable, Mapping, Optional, Union

from . import _capture
from . import _wire as w
from ._settings import Settings

log = logging.getLogger("foyer_backend")


class Client:
    """One gateway. Every call retries network errors, 5xx and 429 with jittered exponential
    backoff, resending the same request (same body, same signature) for at most `retry_for`
    seconds (default: the settings' RETRY_FOR, 30 s), then raises `FoyerError`. Other
    4xx answers raise at once: they mean the request itself is wrong. Without `settings`,
    `Settings.default()`: Django's FOYER inside a Django project, else the environment."""

    def __init__(self, settings: Optional[Settings] = None, sleep=time.sleep, clock=time.monotonic):
        self.settings = settings or Settings.default()
        self._sleep, self._clock = sleep, clock

    # The endpoints

    def publish(self, messages: Union[Mapping, Iterable[Mapping]], retry_for: Optional[float] = None) -> dict:
        """Publishes one message or many; see `foyer_backend.publish`."""
        msgs = w.fix_ids(messages)
        cap = _capture.current()
        if cap:
            return cap.publish(msgs)
        return self._in_batches("/publish", (w.publish_body(batch) for batch in w.batches(msgs)), retry_for)

    def link(self, channel: str, inbox: str, retry_for: Optional[float] = None) -> dict:
        """Links `channel` into `inbox` (PROTOCOL v1.2 "Inboxes"): every event the channel
        accepts from now on is forwarded to the inbox. Returns the result,
        `{"channel", "inbox", "linked": True}` (or `"linked": False, "error": "too_many_links"`
        when the channel already holds 8 links). Linking twice is harmless."""
        return self.links([{"channel": channel, "inbox": inbox}], retry_for=retry_for)["results"][0]

    def unlink(self, channel: str, inbox: str, retry_for: Optional[float] = None) -> dict:
        """Removes the link of `channel` into `inbox`: `{"channel", "inbox", "linked": False}`."""
        return self.links([{"channel": channel, "inbox": inbox, "remove": True}], retry_for=retry_for)["results"][0]

    def links(self, entries: Iterable[Any], retry_for: Optional[float] = None) -> dict:
        """`POST /links` for many links at once: each entry a `(channel, inbox)` pair or a dict
        `{"channel", "inbox", "remove"?}`. More than 100 are sent as several requests, in
        order. Returns `{"results": [...]}` in the entries' order; on failure `FoyerError.results`
        holds the results of the requests that did succeed (sending the same links again is
        harmless)."""
        entries = w.link_entries(entries)
        cap = _capture.current()
        if cap:
            return cap.link(entries)
        return self._in_batches("/links", (w.links_body(batch) for batch in w.chunks(entries, w.MAX_LINKS)), retry_for)

    def _in_batches(self, path: str, bodies: Iterable[bytes], retry_for: Optional[float]) -> dict:
        """POSTs `bodies` to `path` one after another, joining their `results` in order; a
        failure carries the results of the requests that did succeed (`FoyerError.results`)."""
        results: list = []
        for body in bodies:
            try:
                answer = self.request("POST", path, body, retry_for=retry_for)
            except w.FoyerError as e:
                e.results = results + e.results
                raise
            results.extend(answer.get("results", []))
        return {"results": results}

    def channel_info(self, channel: str, retry_for: Optional[float] = None) -> dict:
        """`GET /channels/{kind}/{key}`: `{"channel", "seq", "sockets", "users", "truncated"}`."""
        cap = _capture.current()
        if cap:
            return cap.channel_info(channel)
        return self.request("GET", w.channel_path(channel), b"", retry_for=retry_for)

    def history(self, channel: str, since: int = 0, limit: int = 100, retry_for: Optional[float] = None) -> dict:
        """`GET /channels/{kind}/{key}/history?since=N&limit=M`: `{"channel", "seq", "reset", "events"}`."""
        cap = _capture.current()
        if cap:
            return cap.history(channel, since, limit)
        return self.request("GET", w.history_target(channel, since, limit), b"", retry_for=retry_for)

    def revoke(self, sub: str, channels: Optional[Iterable[str]] = None, retry_for: Optional[float] = None) -> dict:
        """`POST /revoke`: closes `sub`'s sockets (in `channels`, or all when `channels` is
        None) and refuses its tokens issued up to now. Retries keep the first signature, hence
        the revocation's time. `channels=[]` raises ValueError (the gateway answers it 400)."""
        body = w.revoke_body(sub, channels)
        cap = _capture.current()
        if cap:
            return cap.revoke(body)
        return self.request("POST", "/revoke", body, retry_for=retry_for)

    # One signed request, retried

    def request(self, method: str, target: str, body: bytes, retry_for: Optional[float] = None) -> Any:
        s = self.settings
        base = s.base_url()
        headers = w.request_headers(method, target, body, s.publish_secret())
        budget = w.clamp_retry_for(retry_for, s.retry_for)
        deadline = self._clock() + budget
        attempt = 0
        while True:
            attempt += 1
            # One attempt only (retry_for=0, as the outbox sends): the whole TIMEOUT for it.
            timeout = s.timeout if budget == 0 else max(1.0, min(s.timeout, deadline - self._clock()))
            wait = None
            try:
                status, text, resp_headers = self._send(method, base + target, body if method == "POST" else None, headers, timeout)
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


def link(channel: str, inbox: str, settings: Optional[Settings] = None, retry_for: Optional[float] = None) -> dict:
    """Links `channel` into `inbox` (an `inbox:` channel); see `Client.link`."""
    return _client(settings).link(channel, inbox, retry_for=retry_for)


def unlink(channel: str, inbox: str, settings: Optional[Settings] = None, retry_for: Optional[float] = None) -> dict:
    """Removes the link of `channel` into `inbox`; see `Client.unlink`."""
    return _client(settings).unlink(channel, inbox, retry_for=retry_for)


def links(entries: Iterable[Any], settings: Optional[Settings] = None, retry_for: Optional[float] = None) -> dict:
    """Many links (and removals) at once; see `Client.links`."""
    return _client(settings).links(entries, retry_for=retry_for)


def channel_info(channel: str, settings: Optional[Settings] = None, retry_for: Optional[float] = None) -> dict:
    """A channel's latest `seq`, open sockets and users (PROTOCOL "Reading channels")."""
    return _client(settings).channel_info(channel, retry_for=retry_for)


def history(channel: str, since: int = 0, limit: int = 100, settings: Optional[Settings] = None,
            retry_for: Optional[float] = None) -> dict:
    """A channel's retained events after `since`, at most `limit` (1..=1000)."""
    return _client(settings).history(channel, since, limit, retry_for=retry_for)


def revoke(sub: str, channels: Optional[Iterable[str]] = None, settings: Optional[Settings] = None,
           retry_for: Optional[float] = None) -> dict:
    """Closes `sub`'s sockets (in `channels`, or everywhere when None) and refuses its older
    tokens. Inside a Django project it reads Django's FOYER settings."""
    return _client(settings).revoke(sub, channels, retry_for=retry_for)
