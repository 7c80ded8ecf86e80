"""`path("foyer/", include("foyer_backend.django.urls"))` gives `foyer/token` (name "foyer-token")."""
from django.urls import path

from . import views

urlpatterns = [
    path("token", views.token, name="foyer-token"),
]
