from django.apps import AppConfig


class FoyerConfig(AppConfig):
    name = "foyer_backend.django"
    label = "foyer"
    verbose_name = "Foyer gateway"
