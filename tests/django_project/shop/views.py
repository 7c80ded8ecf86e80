import logging

from django.http import Http404, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from foyer_backend.django import client_config, foyer_webhook, guest_sub

from .models import ChatMessage, Order

log = logging.getLogger(__name__)


@require_POST
def place_order(request):
    """An anonymous customer orders from their seat (no account): the order is bound to the session."""
    order = Order.objects.create(
        venue=request.POST["venue"], seat=request.POST["seat"],
        items=request.POST.getlist("items"), guest=guest_sub(request))
    return JsonResponse({"order": order.key, "pk": order.pk}, status=201)


def order_page(request, pk):
    """The customer's page: payment status and chat of one order placed in this session."""
    order = get_object_or_404(Order, pk=pk)
    if not order.guest or order.guest != guest_sub(request, create=False):
        raise Http404
    # The template renders each channel's client configuration with {% foyer_config %}
    # (payment replays its history: no since needed).
    return render(request, "shop/order.html", {"order": order})


def dashboard(request):
    """The staff dashboard: render the venue's orders at a known seq, then connect with since=seq.

    Read the seq first, then the database: an order committed in between is both in the page
    and replayed (the page applies events by order id, so that is harmless); the other way
    round it could be in neither."""
    if not (request.user.is_authenticated and request.user.is_staff):
        return HttpResponseForbidden()
    venue = request.user.staff.venue
    # read_seq: the channel's seq now (None, logged, if the gateway cannot be read).
    foyer = client_config(f"orders:{venue}", read_seq=True)
    orders = Order.objects.filter(venue=venue).exclude(status="collected").order_by("pk")
    return render(request, "shop/dashboard.html", {"orders": orders, "foyer": foyer, "seq": foyer["since"]})


@foyer_webhook
def chat_hook(request):
    """The gateway's chat webhook (CHAT_WEBHOOK_URL): verified by the kit before this runs."""
    msg = request.foyer_message
    ChatMessage.objects.get_or_create(foyer_id=msg["id"], defaults={
        "channel": msg["channel"], "seq": msg["seq"], "author_sub": msg["author"]["sub"],
        "author_name": msg["author"].get("name"), "text": msg["text"]})
    # forward_to_whatsapp(msg) would go here (idempotent on msg["id"]).
    return HttpResponse(status=204)
