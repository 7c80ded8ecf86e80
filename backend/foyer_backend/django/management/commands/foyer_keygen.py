"""`manage.py foyer_keygen`: an Ed25519 pair for production, from the installed kit."""
import json
import os
import secrets

from django.core.management.base import BaseCommand, CommandError

from .... import generate_ed25519


class Command(BaseCommand):
    help = ("Writes an Ed25519 pair: foyer-<kid>.private.jwk.json (mode 0600: the backend's FOYER['JWT_KEYS']) "
            "and foyer-<kid>.public.jwks.json (the gateway's JWT_KEYS: public only). Needs foyer-backend[eddsa].")

    def add_arguments(self, parser):
        parser.add_argument("--kid", help="key id (default: today's date and a random suffix)")
        parser.add_argument("--out", default=".", help="directory to write the two files to (default: .)")
        parser.add_argument("--force", action="store_true", help="overwrite existing files")

    def handle(self, *args, kid=None, out=".", force=False, **options):
        try:
            private, public = generate_ed25519(kid)
        except RuntimeError as e:
            raise CommandError(str(e))
        kid = private["kid"]
        os.makedirs(out, exist_ok=True)
        priv_path = os.path.join(out, f"foyer-{kid}.private.jwk.json")
        pub_path = os.path.join(out, f"foyer-{kid}.public.jwks.json")
        for path in (priv_path, pub_path):
            if os.path.exists(path) and not force:
                raise CommandError(f"{path} exists (use --force to overwrite)")
        fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(private) + "\n")
        os.chmod(priv_path, 0o600)
        with open(pub_path, "w") as f:
            f.write(json.dumps(public) + "\n")
        self.stdout.write(f"""wrote {priv_path}  (private: the backend's JWT_KEYS; keep it secret, never commit it)
wrote {pub_path}  (public: the gateway's JWT_KEYS)

Gateway (the same names as the backend):
  wrangler secret put JWT_KEYS < {pub_path}
  wrangler secret put PUBLISH_SECRETS        # e.g. {secrets.token_hex(32)}
  wrangler secret put CHAT_WEBHOOK_SECRET    # e.g. {secrets.token_hex(32)}

Backend, in its environment, read by settings.py's FOYER (docs/django.md):
  JWT_KEYS="$(cat {priv_path})"
  PUBLISH_SECRETS=<the same value as the gateway's>
  CHAT_WEBHOOK_SECRET=<the same value as the gateway's>

During a rotation the gateway holds both public keys: {{"keys": [old, new]}}.""")
