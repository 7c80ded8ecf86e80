"""FOYER_GRANTS = "shop.foyer.grants": which channels the token view grants to a request."""
from foyer_backend.django import Grant, guest_sub

from .models import Order

MAX_ORDERS = 20  # keeps a token well under the gateway's 8 KiB


def grants(request):
    user = request.user
    if user.is_authenticated and user.is_staff:
        venue = user.staff.venue
        open_orders = Order.objects.filter(venue=venue).exclude(status="collected").order_by("-pk")[:50]
        chats = [f"chat:{o.key}" for o in open_orders]
        return Grant(sub=f"staff-{user.pk}", channels=[f"orders:{venue}", *chats], publish=chats,
                     name=user.get_short_name() or user.get_username(), role="staff")
    # Anyone else is an anonymous customer: the orders placed in this session, nothing more.
    sub = guest_sub(request)
    orders = list(Order.objects.filter(guest=sub).order_by("-pk")[:MAX_ORDERS])
    if not orders:
        return None
    return Grant(sub=sub,
                 channels=[c for o in orders for c in (f"payment:{o.key}", f"chat:{o.key}")],
                 publish=[f"chat:{o.key}" for o in orders],
                 name=f"Seat {orders[0].seat}", role="customer")
