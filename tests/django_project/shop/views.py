import json
import logging

from django.conf import settings
from django.http import Http404, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from foyer_backend import FoyerError, channel_info
from foyer_backend.django import foyer_settings, foyer_webhook, guest_sub

from .models import ChatMessage, Order

log = logging.getLogger(__name__)


def _client_config(channel, since=None):
    """What a page needs to load the browser client from the gateway and connect."""
    return {
        "client": settings.FOYER_URL + "/client/foyer.js",
        "url": settings.FOYER_URL.replace("http", "ws", 1),
        "channel": channel,
        "since": since,
        "token_url": reverse("foyer-token"),
    }


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
    if not order.guest or order.guest != guest_sub(request):
        raise Http404
    return render(request, "shop/order.html", {
        "order": order,
        "payment": _client_config(f"payment:{order.key}"),   # payment replays its history: no since needed
        "chat": _client_config(f"chat:{order.key}"),
    })


def dashboard(request):
    """The staff dashboard: render the venue's orders at a known seq, then connect with since=seq.

    Read the seq first, then the database: an order committed in between is both in the page
    and replayed (the page applies events by order id, so that is harmless); the other way
    round it could be in neither."""
    if not (request.user.is_authenticated and request.user.is_staff):
        return HttpResponseForbidden()
    venue = request.user.staff.venue
    channel = f"orders:{venue}"
    try:
        seq = channel_info(channel, settings=foyer_settings(), retry_for=2)["seq"]
    except (FoyerError, ValueError) as e:
        log.warning("foyer: could not read %s (%s); the page connects without since", channel, e)
        seq = None
    orders = Order.objects.filter(venue=venue).exclude(status="collected").order_by("pk")
    return render(request, "shop/dashboard.html", {"orders": orders, "foyer": _client_config(channel, seq), "seq": seq})


@foyer_webhook
def chat_hook(request):
    """The gateway's chat webhook (CHAT_WEBHOOK_URL): verified by the kit before this runs."""
    msg = request.foyer_message
    ChatMessage.objects.get_or_create(foyer_id=msg["id"], defaults={
        "channel": msg["channel"], "seq": msg["seq"], "author_sub": msg["author"]["sub"],
        "author_name": msg["author"].get("name"), "text": msg["text"]})
    # forward_to_whatsapp(msg) would go here (idempotent on msg["id"]).
    return HttpResponse(status=204)
