"""A test fake for code that uses the kit: nothing is sent, everything is recorded.

    from foyer_backend.testing import capture

    with capture() as foyer:
        place_order(...)                      # publishes, links, revokes, mints tokens
    assert foyer.events("orders:venue-1", "order.created")

`publish`, `links`/`link`/`unlink`, `revoke`, `channel_info`, `history` (sync and async) and
`mint_token` are answered as the gateway would answer (a `seq` per channel, `duplicate` for
an id already published, `too_many_links` for a ninth link), with no request made.
`publish_on_commit` and `link_on_commit` keep their on-commit semantics: validated and
serialized at the call, recorded only when the transaction commits, never after a rollback.
Nothing is written to the outbox table.

In a Django `TestCase` (whose transaction never commits) run the code under
`self.captureOnCommitCallbacks(execute=True)`, as for any on-commit hook; `FoyerTestMixin`
gives each test a fresh capture as `self.foyer`.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from ._capture import Captured, pop, push

__all__ = ["Captured", "FoyerTestMixin", "capture"]


@contextlib.contextmanager
def capture() -> Iterator[Captured]:
    """Records every publish, link, revoke and token made inside the block, sending nothing."""
    c = Captured()
    push(c)
    try:
        yield c
    finally:
        pop(c)


class FoyerTestMixin:
    """For Django test cases (`class OrderTests(FoyerTestMixin, TestCase)`): `self.foyer` is a
    fresh `Captured` in every test, and the assertions below read it."""

    foyer: Captured

    def setUp(self):
        super().setUp()
        cm = capture()
        self.foyer = cm.__enter__()
        self.addCleanup(cm.__exit__, None, None, None)

    def assertPublished(self, event: Optional[str] = None, channel: Optional[str] = None, count: Optional[int] = None):
        """At least one message (or exactly `count`) named `event` on `channel` was published;
        returns them."""
        found = self.foyer.events(channel, event)
        what = f"event {event!r}" if event else "a message"
        where = f" on {channel!r}" if channel else ""
        if count is None and not found:
            self.fail(f"{what}{where} was not published; published: {[(m['event'], m['channels']) for m in self.foyer.publishes]}")
        if count is not None and len(found) != count:
            self.fail(f"{what}{where} was published {len(found)} times, not {count}")
        return found

    def assertNothingPublished(self):
        if self.foyer.publishes:
            self.fail(f"published: {[(m['event'], m['channels']) for m in self.foyer.publishes]}")
