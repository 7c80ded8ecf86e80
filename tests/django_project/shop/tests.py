from django.contrib.auth.models import User
from django.db import transaction
from django.test import TestCase

from foyer_backend.testing import FoyerTestMixin

from .models import Order, StaffProfile


class OrderTests(FoyerTestMixin, TestCase):  # self.foyer: a fresh capture in every test
    def test_an_order_is_announced_and_linked_after_commit(self):
        with self.captureOnCommitCallbacks(execute=True):  # a TestCase never commits: run the hooks
            with transaction.atomic():
                order = Order.objects.create(venue="venue-1", seat="A1", items=["tea"])
        self.assertPublished("order.created", "orders:venue-1", count=1)
        self.assertEqual(self.foyer.linked("inbox:venue-1"), [f"chat:{order.key}", "orders:venue-1"])

    def test_a_rolled_back_order_announces_nothing(self):
        with self.captureOnCommitCallbacks(execute=True):
            try:
                with transaction.atomic():
                    Order.objects.create(venue="venue-1", seat="A1", items=["tea"])
                    raise RuntimeError("the view failed")
            except RuntimeError:
                pass
        self.assertNothingPublished()
        self.assertEqual(self.foyer.links, [])

    def test_staff_get_the_venues_inbox(self):
        user = User.objects.create_user("sam", is_staff=True)
        StaffProfile.objects.create(user=user, venue="venue-1")
        self.client.force_login(user)
        self.assertEqual(self.client.get("/foyer/token").status_code, 200)
        self.assertEqual(self.foyer.tokens[-1]["channels"][0], "inbox:venue-1")
