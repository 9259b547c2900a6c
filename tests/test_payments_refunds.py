"""A refund made in Stripe (charge.refunded) takes the refunded credits back as a staff-visible
negative adjustment: never below zero, never twice."""

import logging

import pytest

from credits.models import LedgerEntry
from credits.services import balance_get
from payments.models import Purchase
from tests.conftest import set_balance_for_test
from tests.payments_fixtures import completed_event, post_event, refund_event

pytest_plugins = ["tests.payments_fixtures"]
pytestmark = pytest.mark.usefixtures("in_english")

PRICE = 24900  # the Creator package, in cents


@pytest.fixture
def paid(client, fake_stripe, alice_purchase) -> Purchase:
    """Alice's purchase, paid and credited (balance 5 + 1500)."""
    assert (
        post_event(
            client, completed_event(fake_stripe, alice_purchase.stripe_session_id)
        ).status_code
        == 200
    )
    alice_purchase.refresh_from_db()
    assert alice_purchase.status == Purchase.Status.PAID
    return alice_purchase


def _clawbacks(user):
    return LedgerEntry.objects.filter(
        user=user, kind=LedgerEntry.Kind.ADMIN_ADJUSTMENT, reason__startswith="Stripe refund of"
    )


def test_it_takes_back_the_credits_of_a_full_refund_once(alice, client, paid):
    event = refund_event(
        payment_intent=paid.stripe_payment_intent_id, amount=PRICE, amount_refunded=PRICE
    )

    responses = [post_event(client, event), post_event(client, event)]
    post_event(client, {**event, "id": "evt_another_delivery"})

    assert [r.status_code for r in responses] == [200, 200]
    [entry] = _clawbacks(alice)
    assert (entry.amount, entry.actor) == (-1500, None)
    assert "Creator" in entry.reason
    assert balance_get(user=alice) == 5
    paid.refresh_from_db()
    assert (paid.status, paid.credits_clawed_back, paid.clawback_shortfall) == ("refunded", 1500, 0)
    assert not paid.needs_review


def test_it_never_takes_the_balance_below_zero_and_flags_the_shortfall(alice, client, paid, caplog):
    set_balance_for_test(alice, 300)  # alice already spent most of the credits
    event = refund_event(
        payment_intent=paid.stripe_payment_intent_id, amount=PRICE, amount_refunded=PRICE
    )

    with caplog.at_level(logging.WARNING, logger="payments"):
        post_event(client, event)
    post_event(client, {**event, "id": "evt_again"})

    [entry] = _clawbacks(alice)
    assert entry.amount == -300
    assert balance_get(user=alice) == 0
    paid.refresh_from_db()
    assert (paid.credits_clawed_back, paid.clawback_shortfall) == (300, 1200)
    assert paid.needs_review
    assert "1200" in paid.review_note
    assert Purchase.objects.needing_review().get() == paid
    assert any(getattr(r, "purchase_id", None) == str(paid.pk) for r in caplog.records)


def test_it_takes_back_nothing_from_an_empty_balance_but_flags_it(alice, client, paid):
    set_balance_for_test(alice, 0)

    post_event(
        client,
        refund_event(
            payment_intent=paid.stripe_payment_intent_id, amount=PRICE, amount_refunded=PRICE
        ),
    )

    assert not _clawbacks(alice).exists()
    assert balance_get(user=alice) == 0
    paid.refresh_from_db()
    assert (paid.status, paid.clawback_shortfall, paid.needs_review) == ("refunded", 1500, True)


def test_it_takes_back_partial_refunds_in_proportion_whatever_their_order(alice, client, paid):
    half = refund_event(
        payment_intent=paid.stripe_payment_intent_id, amount=PRICE, amount_refunded=PRICE // 2
    )
    full = refund_event(
        payment_intent=paid.stripe_payment_intent_id, amount=PRICE, amount_refunded=PRICE
    )

    post_event(client, half)
    paid.refresh_from_db()
    assert (paid.status, paid.credits_clawed_back) == ("partially_refunded", 750)
    assert balance_get(user=alice) == 5 + 750

    post_event(client, full)
    post_event(client, {**half, "id": "evt_late_half"})  # an older figure, delivered late

    assert sorted(e.amount for e in _clawbacks(alice)) == [-750, -750]
    assert balance_get(user=alice) == 5
    paid.refresh_from_db()
    assert (paid.status, paid.credits_clawed_back) == ("refunded", 1500)


def test_it_ignores_a_refund_of_a_charge_we_did_not_sell(alice, client, paid, caplog):
    with caplog.at_level(logging.WARNING, logger="payments"):
        response = post_event(
            client, refund_event(payment_intent="pi_unknown", amount=PRICE, amount_refunded=PRICE)
        )

    assert response.status_code == 200
    assert balance_get(user=alice) == 5 + 1500
    assert any("did not sell" in r.getMessage() for r in caplog.records)


def test_it_refuses_a_refund_in_another_currency(alice, client, paid):
    event = refund_event(
        payment_intent=paid.stripe_payment_intent_id,
        amount=PRICE,
        amount_refunded=PRICE,
        currency="eur",
    )

    post_event(client, event)

    assert balance_get(user=alice) == 5 + 1500
    paid.refresh_from_db()
    assert paid.needs_review
