from django.apps import AppConfig


class FoyerConfig(AppConfig):
    name = "foyer_backend.django"
    label = "foyer"
    verbose_name = "Foyer gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import checks  # noqa: F401  (registers the foyer.E... system checks)
