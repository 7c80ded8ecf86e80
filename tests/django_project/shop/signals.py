from django.db.models.signals import post_save
from django.dispatch import receiver

from foyer_backend import message
from foyer_backend.django import link_on_commit, publish_on_commit

from .models import Order


@receiver(post_save, sender=Order)
def order_saved(sender, instance, created, **kwargs):
    # Both go through the outbox: written in this transaction, sent after the commit (never if
    # it rolls back), retried until the gateway has them; a gateway failure never breaks the save.
    if created:
        # The venue's staff follow every order's chat and the orders feed on one socket, the
        # venue's inbox. Linked before the publish below, so its event reaches the inbox too.
        inbox = f"inbox:{instance.venue}"
        link_on_commit([(f"chat:{instance.key}", inbox), (f"orders:{instance.venue}", inbox)])
    # The id names the order's state, so a re-save in the same state (or a second send of the
    # row) is deduplicated by the gateway.
    publish_on_commit(message(
        f"order.{instance.status}",
        [f"orders:{instance.venue}", f"payment:{instance.key}"],
        instance.as_event_data(),
        id=f"order-{instance.pk}-{instance.status}",
    ))
