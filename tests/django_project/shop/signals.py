from django.db.models.signals import post_save
from django.dispatch import receiver

from foyer_backend import message
from foyer_backend.django import publish_on_commit

from .models import Order


@receiver(post_save, sender=Order)
def order_saved(sender, instance, **kwargs):
    # After commit only (a rolled-back order reaches nobody), off the request thread, retried;
    # a failure is logged, never raised into the save. The id names the order's state, so a
    # re-save in the same state is deduplicated by the gateway.
    publish_on_commit(message(
        f"order.{instance.status}",
        [f"orders:{instance.venue}", f"payment:{instance.key}"],
        instance.as_event_data(),
        id=f"order-{instance.pk}-{instance.status}",
    ))
