"""Staff see every purchase with its money read-only, filter them by status, and find the ones a
refund or a mismatched payment flagged for review."""

import pytest
from django.test import Client

from payments.models import Purchase
from tests.conftest import set_balance_for_test
from tests.payments_fixtures import completed_event, post_event, refund_event

pytest_plugins = ["tests.payments_fixtures"]
pytestmark = pytest.mark.usefixtures("in_english")

LIST_URL = "/admin/payments/purchase/"


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def flagged(alice, client, fake_stripe, alice_purchase) -> Purchase:
    """Alice bought, spent all but 100 credits, then was refunded in Stripe."""
    event = completed_event(fake_stripe, alice_purchase.stripe_session_id)
    post_event(client, event)
    set_balance_for_test(alice, 100)
    payment_intent = event["data"]["object"]["payment_intent"]
    post_event(
        client, refund_event(payment_intent=payment_intent, amount=24900, amount_refunded=24900)
    )
    alice_purchase.refresh_from_db()
    assert alice_purchase.needs_review
    return alice_purchase


def test_it_lists_the_purchases_flagged_for_review(
    staff_client, flagged, bob_client, fake_stripe, creator_package
):
    bob_client.post(f"/dashboard/credits/buy/{creator_package.pk}/")  # a pending one, not flagged

    everything = staff_client.get(LIST_URL).content.decode()
    to_review = staff_client.get(LIST_URL, {"needs_review__exact": "1"}).content.decode()
    refunded = staff_client.get(LIST_URL, {"status__exact": "refunded"}).content.decode()

    assert "alice@example.com" in everything and "bob@example.com" in everything
    assert "alice@example.com" in to_review and "bob@example.com" not in to_review
    assert "alice@example.com" in refunded and "bob@example.com" not in refunded


def test_it_shows_the_money_read_only(staff_client, flagged):
    page = staff_client.get(f"{LIST_URL}{flagged.pk}/change/").content.decode()

    assert 'name="needs_review"' in page
    for field in ("credits", "price", "amount_total", "status", "credits_clawed_back"):
        assert f'name="{field}"' not in page
    assert staff_client.get(f"{LIST_URL}add/").status_code == 403


def test_it_lets_staff_mark_a_purchase_reviewed(staff_client, flagged):
    response = staff_client.post(
        LIST_URL, {"action": "mark_reviewed", "_selected_action": [str(flagged.pk)]}
    )

    assert response.status_code == 302
    flagged.refresh_from_db()
    assert not flagged.needs_review
    assert flagged.clawback_shortfall == 1400  # the record of what was not taken back stays


def test_it_keeps_purchases_away_from_non_staff(alice_client, flagged):
    response = alice_client.get(LIST_URL)

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
