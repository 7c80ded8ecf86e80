"""The outbox: what `publish_on_commit` and `link_on_commit` wrote in the caller's
transaction and has not reached the gateway yet (docs/django.md, "The outbox")."""
from django.db import models
from django.utils import timezone


class OutboxEntry(models.Model):
    """One pending send: a message (`kind` "publish", `key` its id) or a group of links
    (`kind` "links"). Written in the caller's transaction, so it exists exactly when the
    data does; deleted once the gateway accepted it. The body is the JSON sent, serialized
    when the row was written, so a message's id is fixed and a second send is deduplicated by
    the gateway."""

    kind = models.CharField(max_length=16)
    key = models.CharField(max_length=128, help_text="the message id (publish) or a label (links)")
    body = models.TextField(help_text="the JSON sent to the gateway")
    created = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    next_try = models.DateTimeField(default=timezone.now)
    claim = models.CharField(max_length=32, blank=True, default="", help_text="the drainer sending it now")
    last_error = models.TextField(blank=True, default="")
    dead = models.BooleanField(default=False, help_text="refused in a way no retry changes (400, 404, 413): kept, not retried")

    class Meta:
        db_table = "foyer_outbox"
        ordering = ["pk"]
        indexes = [models.Index(fields=["dead", "id"], name="foyer_outbox_pending")]
        verbose_name = "outbox entry"
        verbose_name_plural = "outbox"

    def __str__(self):
        return f"{self.kind} {self.key} (attempts {self.attempts})"
