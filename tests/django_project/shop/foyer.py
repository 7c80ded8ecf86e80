"""FOYER["GRANTS"] = "shop.foyer.grants": which channels the token view grants to a request."""
from foyer_backend.django import Grant, guest_sub, staff_grant

from .models import Order

MAX_ORDERS = 20  # keeps a token well under the gateway's 8 KiB


def grants(request):
    user = request.user
    if user.is_authenticated and user.is_staff:
        venue = user.staff.venue
        open_orders = Order.objects.filter(venue=venue).exclude(status="collected").order_by("-pk")[:50]
        chats = [f"chat:{o.key}" for o in open_orders]
        # inbox:{venue} (every linked chat and the orders feed on one socket) and publish for
        # those chats (staff answer over the inbox), plus the feed and chats for older pages.
        return staff_grant(f"staff-{user.pk}", venue, chats, channels=[f"orders:{venue}", *chats],
                           name=user.get_short_name() or user.get_username())
    # Anyone else is an anonymous customer: the orders placed in this session, nothing more.
    # create=False: asking for a token never creates a session for a visitor who has none.
    sub = guest_sub(request, create=False)
    orders = list(Order.objects.filter(guest=sub).order_by("-pk")[:MAX_ORDERS]) if sub else []
    if not orders:
        return None
    return Grant(sub=sub,
                 channels=[c for o in orders for c in (f"payment:{o.key}", f"chat:{o.key}")],
                 publish=[f"chat:{o.key}" for o in orders],
                 name=f"Seat {orders[0].seat}", role="customer")
