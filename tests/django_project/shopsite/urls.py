from django.urls import include, path

from shop import views

urlpatterns = [
    path("foyer/", include("foyer_backend.django.urls")),  # GET /foyer/token
    path("hooks/chat", views.chat_hook),                   # the gateway's CHAT_WEBHOOK_URL
    path("order", views.place_order, name="place-order"),
    path("order/<int:pk>", views.order_page, name="order"),
    path("dashboard", views.dashboard, name="dashboard"),
]
