"""`manage.py foyer_token SUB CHANNEL...`: a token from the project's FOYER settings, for debugging."""
from django.core.management.base import BaseCommand, CommandError

from .... import mint_token
from ... import foyer_settings


class Command(BaseCommand):
    help = ("Prints a token for SUB that may subscribe to CHANNEL... (and post to --publish chats), minted with "
            "FOYER['JWT_KEYS'] and FOYER['JWT_ISSUER'], e.g. to open a socket by hand: "
            "websocat -H 'Sec-WebSocket-Protocol: foyer.v1, bearer.<token>' <URL>/ws/orders/venue-1")

    def add_arguments(self, parser):
        parser.add_argument("sub")
        parser.add_argument("channels", nargs="+", metavar="CHANNEL")
        parser.add_argument("--publish", action="append", default=[], metavar="CHANNEL",
                            help="a chat channel the holder may post to (repeatable)")
        parser.add_argument("--name")
        parser.add_argument("--role")
        parser.add_argument("--ttl", type=int, help="seconds (default FOYER['TOKEN_TTL'], 300)")

    def handle(self, sub, channels, publish=(), name=None, role=None, ttl=None, **options):
        s = foyer_settings()
        try:
            token = mint_token(sub, channels, publish, name, role, ttl=ttl or s.token_ttl, settings=s)
        except (ValueError, TypeError, RuntimeError) as e:
            raise CommandError(str(e))
        self.stdout.write(token)
