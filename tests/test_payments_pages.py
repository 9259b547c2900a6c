"""What the buyer sees: the Buy button (only with Stripe configured), the page Stripe sends them
back to, the cancel page, and their purchases."""

from datetime import timedelta

import pytest
from django.template.loader import render_to_string
from django.utils import timezone

from credits.models import LedgerEntry
from credits.services import balance_get
from payments.models import Purchase
from tests.payments_fixtures import completed_event, post_event

pytest_plugins = ["tests.payments_fixtures"]
pytestmark = pytest.mark.usefixtures("in_english")

MANUAL_TEXT = "write to our team"


def test_it_shows_a_buy_form_per_package_when_stripe_is_configured(
    alice_client, fake_stripe, creator_package
):
    page = alice_client.get("/dashboard/credits/").content.decode()

    assert f'action="/dashboard/credits/buy/{creator_package.pk}/"' in page
    assert 'name="csrfmiddlewaretoken"' in page
    assert MANUAL_TEXT not in page


def test_it_shows_how_to_buy_by_hand_without_stripe_keys(alice_client, creator_package, settings):
    settings.STRIPE_SECRET_KEY = settings.STRIPE_WEBHOOK_SECRET = ""

    response = alice_client.get("/dashboard/credits/")

    page = response.content.decode()
    assert response.status_code == 200
    assert MANUAL_TEXT in page
    assert "/dashboard/credits/buy/" not in page


def _success_url(purchase: Purchase) -> str:
    return f"/dashboard/credits/purchases/{purchase.pk}/success/"


def test_it_says_the_payment_is_being_confirmed_until_stripe_confirms_it(
    alice, alice_client, client, fake_stripe, alice_purchase
):
    # Back from Stripe before the webhook: no credits from the redirect, the page polls.
    pending = alice_client.get(_success_url(alice_purchase)).content.decode()
    assert "We are confirming your payment" in pending
    assert 'hx-trigger="every 2s"' in pending
    assert balance_get(user=alice) == 5

    post_event(client, completed_event(fake_stripe, alice_purchase.stripe_session_id))
    poll = alice_client.get(_success_url(alice_purchase), headers={"HX-Request": "true"})

    partial = poll.content.decode()
    assert "<html" not in partial
    assert "Payment confirmed: 1500 credits were added" in partial
    assert "hx-trigger" not in partial  # polling stops
    assert 'id="balance"' in partial and 'hx-swap-oob="true"' in partial
    assert "HX-Request" in poll["Vary"]


def test_it_asks_stripe_itself_about_a_purchase_whose_webhook_is_late(
    alice, alice_client, fake_stripe, alice_purchase
):
    long_ago = timezone.now() - timedelta(minutes=2)
    Purchase.objects.filter(pk=alice_purchase.pk).update(created_at=long_ago, updated_at=long_ago)
    fake_stripe.pay(alice_purchase.stripe_session_id)  # paid at Stripe; the webhook never came

    first = alice_client.get(_success_url(alice_purchase)).content.decode()
    Purchase.objects.filter(pk=alice_purchase.pk).update(updated_at=long_ago)
    alice_client.get(_success_url(alice_purchase))

    assert "Payment confirmed" in first
    assert balance_get(user=alice) == 5 + 1500
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.PURCHASE).count() == 1


def test_it_does_not_ask_stripe_about_a_fresh_purchase(alice_client, fake_stripe, alice_purchase):
    alice_client.get(_success_url(alice_purchase))

    assert not [r for r in fake_stripe.requests if r["method"] == "GET"]


def test_it_shows_the_cancel_page_with_nothing_charged(alice, alice_client, alice_purchase):
    response = alice_client.get(f"/dashboard/credits/purchases/{alice_purchase.pk}/cancelled/")

    assert response.status_code == 200
    assert "Nothing was charged for the Creator package" in response.content.decode()
    assert balance_get(user=alice) == 5


@pytest.mark.parametrize("page", ["success", "cancelled"])
def test_it_never_shows_alice_s_purchase_to_bob(bob_client, alice_purchase, page):
    response = bob_client.get(f"/dashboard/credits/purchases/{alice_purchase.pk}/{page}/")

    assert response.status_code == 404


def test_it_sends_an_anonymous_visitor_of_a_purchase_to_sign_in(client, alice_purchase):
    response = client.get(_success_url(alice_purchase))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_lists_only_the_user_s_own_purchases(alice, bob, client, fake_stripe, alice_purchase):
    post_event(client, completed_event(fake_stripe, alice_purchase.stripe_session_id))

    alices = render_to_string(
        "payments/_purchases.html", {"purchases": Purchase.objects.for_user(alice)}
    )
    bobs = render_to_string(
        "payments/_purchases.html", {"purchases": Purchase.objects.for_user(bob)}
    )

    assert "Creator" in alices and "Paid" in alices
    assert "Creator" not in bobs
    assert "You have not bought any credits yet" in bobs
