"""The Django test project (tests/django_project) without a gateway: its settings pass
`manage.py check`, an order writes its links and its event to the outbox in its transaction
(links first), tokens and pages render as tests/django_e2e.py expects, and every snippet of
docs/django.md that names a project file is that file's text. Fast; the kit's test fake
(`foyer_backend.testing.capture()`) stands in for the gateway where one is called.

    .venv/bin/python tests/django_unit.py
"""
import base64
import json
import os
import re
import secrets
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
PROJECT = os.path.join(HERE, "django_project")
sys.path.insert(0, PROJECT)

import foyer_backend as fb  # noqa: E402  (installed from ./backend by scripts/setup)

private, public = fb.generate_ed25519("unit")
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "shopsite.settings", "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "SHOP_DB": os.path.join(tempfile.mkdtemp(prefix="foyer-django-unit-"), "shop.sqlite3"),
    "FOYER_URL": "http://127.0.0.1:9", "JWT_KEYS": json.dumps(private), "JWT_ISSUER": "shop-backend",
    "PUBLISH_SECRETS": secrets.token_hex(16), "CHAT_WEBHOOK_SECRET": secrets.token_hex(16), "FOYER_LOG_LEVEL": "CRITICAL",
})

import django  # noqa: E402

django.setup()
from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0)


def claims_of(token):
    import jwt

    return jwt.decode(token, options={"verify_signature": False})


class Project(unittest.TestCase):
    def setUp(self):
        from foyer_backend.django.models import OutboxEntry

        OutboxEntry.objects.all().delete()
        self.venue = "venue-" + secrets.token_hex(3)

    def worker(self):
        """Rows stay in the outbox (nothing tries the unreachable gateway)."""
        from django.conf import settings
        from django.test import override_settings

        return override_settings(FOYER=dict(settings.FOYER, SEND="worker"))

    def test_manage_py_check_passes_on_the_foyer_dict(self):
        from django.core.checks import run_checks

        self.assertEqual([str(m) for m in run_checks()], [])
        self.assertEqual(fb.Settings.default().url, "http://127.0.0.1:9")

    def test_an_order_writes_its_links_then_its_event_in_its_transaction(self):
        from django.db import transaction

        from foyer_backend.django.models import OutboxEntry
        from shop.models import Order

        with self.worker():
            with transaction.atomic():
                o = Order.objects.create(venue=self.venue, seat="A1", items=["tea"])
                rows = list(OutboxEntry.objects.order_by("pk").values_list("kind", "key", "body"))
            try:
                with transaction.atomic():
                    Order.objects.create(venue=self.venue, seat="ROLLBACK", items=[])
                    raise RuntimeError
            except RuntimeError:
                pass
        self.assertEqual([(k, key) for k, key, _ in rows], [("links", f"links:chat:{o.key}"), ("publish", f"order-{o.pk}-created")])
        self.assertEqual(json.loads(rows[0][2]), [{"channel": f"chat:{o.key}", "inbox": f"inbox:{self.venue}"},
                                                  {"channel": f"orders:{self.venue}", "inbox": f"inbox:{self.venue}"}])
        self.assertEqual(json.loads(rows[1][2])["channels"], [f"orders:{self.venue}", f"payment:{o.key}"])
        self.assertEqual(OutboxEntry.objects.count(), 2, "the rolled-back order wrote nothing")

    def test_tokens_and_pages_under_the_test_fake(self):
        from django.contrib.auth.models import User
        from django.test import Client

        from foyer_backend.testing import capture
        from shop.models import StaffProfile

        with capture() as foyer:
            nobody = Client()
            r = nobody.get("/foyer/token")
            self.assertEqual(r.status_code, 403)
            self.assertNotIn("sessionid", r.cookies, "asking for a token creates no session")
            ann = Client()
            r = ann.post("/order", {"venue": self.venue, "seat": "A12", "items": ["tea"]})
            key = r.json()["order"]
            c = claims_of(ann.get("/foyer/token").content.decode())
            self.assertEqual((c["channels"], c["publish"]), ([f"payment:{key}", f"chat:{key}"], [f"chat:{key}"]))
            page = ann.get(f"/order/{key[2:]}").content.decode()
            cfg = json.loads(re.search(r'<script id="foyer-chat" type="application/json">(.*?)</script>', page).group(1))
            self.assertEqual(cfg, {"client": "http://127.0.0.1:9/client/foyer.js", "url": "ws://127.0.0.1:9",
                                   "channel": f"chat:{key}", "since": None, "token_url": "/foyer/token"})
            self.assertEqual(Client().get(f"/order/{key[2:]}").status_code, 404)

            user = User.objects.create_user("sam-" + self.venue, password="pw", first_name="Sam", is_staff=True)
            StaffProfile.objects.create(user=user, venue=self.venue)
            staff = Client()
            staff.force_login(user)
            c = claims_of(staff.get("/foyer/token").content.decode())
            self.assertEqual(c["channels"][:2], [f"inbox:{self.venue}", f"orders:{self.venue}"])
            self.assertEqual((c["publish"], c["role"], c["name"]), ([f"chat:{key}"], "staff", "Sam"))
            html = staff.get("/dashboard").content.decode()
            self.assertIn('data-seq="1"', html, "rendered at the channel's seq (the fake's: one event)")
        self.assertEqual([m["id"] for m in foyer.events(f"orders:{self.venue}", "order.created")], [f"order-{key[2:]}-created"])
        self.assertEqual(foyer.linked(f"inbox:{self.venue}"), [f"chat:{key}", f"orders:{self.venue}"])


class TheProjectsOwnTests(unittest.TestCase):
    def test_shop_tests_pass_under_djangos_test_runner(self):
        """shop/tests.py (docs/django.md "Testing your code"): the test fake in a TestCase."""
        from django.conf import settings
        from django.test.utils import get_runner

        runner = get_runner(settings)(verbosity=0, interactive=False)
        self.assertEqual(runner.run_tests(["shop.tests"]), 0)


def doc_snippets(text):
    """(file named by the snippet's first line, the snippet's other lines) for every fenced
    block whose first line is a comment naming a file of the test project: `# shop/foyer.py`
    or `<!-- shop/templates/shop/order.html -->` (an ", in part" after the name: the snippet's
    parts, separated by a `...` line, are each in the file)."""
    for m in re.finditer(r"```(\w+)\n(.*?)```", text, re.S):
        first, _, rest = m.group(2).partition("\n")
        name = re.match(r"^(?:#|<!--)\s*([\w/.]+\.(?:py|html))\b(,? in part)?", first)
        if name:
            yield name.group(1), bool(name.group(2)), rest


class Docs(unittest.TestCase):
    def test_every_snippet_naming_a_project_file_is_that_files_text(self):
        text = open(os.path.join(ROOT, "docs", "django.md"), encoding="utf-8").read()
        snippets = list(doc_snippets(text))
        self.assertGreaterEqual(len(snippets), 8, [s[0] for s in snippets])
        for name, in_part, body in snippets:
            path = os.path.join(PROJECT, name if name != "settings.py" else "shopsite/settings.py")
            path = path if os.path.exists(path) else os.path.join(PROJECT, "shop", "templates", name)
            self.assertTrue(os.path.exists(path), name)
            source = open(path, encoding="utf-8").read()
            parts = re.split(r"\n[ \t]*(?:#|<!--)? ?\.\.\.(?: -->)?\n", "\n" + body) if in_part else [body]
            for part in parts:
                part = part.strip("\n")
                if part:
                    self.assertIn(part, source, f"docs/django.md's snippet of {name} is not in the file:\n{part}")


class LocalDevelopment(unittest.TestCase):
    def test_the_documented_dev_vars_settings_run_and_sign_what_the_gateway_verifies(self):
        import jwt

        text = open(os.path.join(ROOT, "docs", "django.md"), encoding="utf-8").read()
        snippet = re.search(r"```python\n(# In your project's settings.py, for DEBUG only\n.*?)```", text, re.S).group(1)
        key = base64.urlsafe_b64encode(b"k" * 32).rstrip(b"=").decode()
        dev_vars = os.path.join(tempfile.mkdtemp(), ".dev.vars")
        with open(dev_vars, "w") as f:  # what scripts/dev writes
            f.write("# Generated by scripts/dev for local development.\n")
            f.write("JWT_KEYS='" + json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "kid": "dev-1", "k": key}]}) + "'\n")
            f.write('JWT_ISSUER="foyer-dev"\nPUBLISH_SECRETS="local-secret"\n')
        scope = {"DEBUG": True}
        exec(snippet.replace("/path/to/foyer/.dev.vars", dev_vars), scope)
        s = fb.Settings.from_mapping(scope["FOYER"], default_url=None)
        self.assertEqual((s.url, s.publish_secret(), s.grants), ("http://127.0.0.1:8787", "local-secret", "shop.foyer.grants"))
        token = fb.mint_token("staff-1", ["orders:venue-1"], settings=s)
        self.assertEqual(jwt.decode(token, b"k" * 32, algorithms=["HS256"], audience="foyer", issuer="foyer-dev")["sub"],
                         "staff-1")


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    sys.exit(0 if result.wasSuccessful() and result.testsRun else 1)


if __name__ == "__main__":
    main()
