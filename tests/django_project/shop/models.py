from django.conf import settings
from django.db import models


class StaffProfile(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff")
    venue = models.CharField(max_length=64)


class Order(models.Model):
    venue = models.CharField(max_length=64)
    seat = models.CharField(max_length=32)
    items = models.JSONField(default=list)
    status = models.CharField(max_length=16, default="created")
    # guest_sub() of the anonymous session that placed the order (never the session key).
    guest = models.CharField(max_length=64, blank=True, db_index=True)
    created = models.DateTimeField(auto_now_add=True)

    @property
    def key(self):
        return f"o-{self.pk}"

    def as_event_data(self):
        return {"order": self.key, "seat": self.seat, "items": self.items, "status": self.status}


class ChatMessage(models.Model):
    """Chat messages received on the gateway's webhook (for the WhatsApp bridge)."""
    foyer_id = models.CharField(max_length=200, unique=True)  # the webhook's id: retries dedupe here
    channel = models.CharField(max_length=80)
    seq = models.IntegerField()
    author_sub = models.CharField(max_length=300)
    author_name = models.CharField(max_length=200, null=True)
    text = models.TextField()
