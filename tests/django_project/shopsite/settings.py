"""Settings of the test shop: an ordinary Django project plus the Foyer kit's settings
(docs/django.md). Secrets come from the environment (tests/django_e2e.py generates them)."""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "foyer_backend.django",  # the kit: token view, the outbox, checks, commands, webhook decorator
    "shop",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "shopsite.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                       "django.contrib.auth.context_processors.auth"]},
}]
WSGI_APPLICATION = "shopsite.wsgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("SHOP_DB", str(BASE_DIR / "db.sqlite3")),
                         "OPTIONS": {"timeout": 20}}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True

# Foyer: one dict. The gateway's names for what the two share; the backend holds the private
# signing key. Secrets come from the environment, under the same names the gateway uses.
FOYER = {
    "URL": os.environ["FOYER_URL"],                           # e.g. https://foyer.example.workers.dev
    "JWT_KEYS": os.environ["JWT_KEYS"],                       # the private JWK (JSON; a dict works too)
    "JWT_ISSUER": os.environ["JWT_ISSUER"],
    "PUBLISH_SECRETS": os.environ["PUBLISH_SECRETS"].split(","),  # the first signs
    "CHAT_WEBHOOK_SECRET": os.environ["CHAT_WEBHOOK_SECRET"],
    "GRANTS": "shop.foyer.grants",                            # who gets which channels: the one hook
    "TOKEN_TTL": 300,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"foyer_backend": {"handlers": ["console"], "level": os.environ.get("FOYER_LOG_LEVEL", "WARNING")}},
}
