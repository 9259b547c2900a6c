"""Stripe's webhook credits a paid Checkout Session exactly once, and only when it is authentic
and matches what we asked for."""

import json
import logging
import time

import pytest

from credits.models import LedgerEntry
from credits.services import balance_get
from payments.models import Purchase, StripeEvent
from tests.payments_fixtures import WEBHOOK_URL, completed_event, make_event, post_event, sign

pytest_plugins = ["tests.payments_fixtures"]
pytestmark = pytest.mark.usefixtures("in_english")


def _purchase_entries(user):
    return LedgerEntry.objects.filter(user=user, kind=LedgerEntry.Kind.PURCHASE)


def test_it_credits_a_paid_checkout_once(alice, client, fake_stripe, alice_purchase):
    event = completed_event(fake_stripe, alice_purchase.stripe_session_id)

    first = post_event(client, event)
    again = post_event(client, event)  # Stripe redelivers
    replay = post_event(client, {**event, "id": "evt_other_delivery"})  # same session, new event id

    assert [first.status_code, again.status_code, replay.status_code] == [200, 200, 200]
    [entry] = _purchase_entries(alice)
    assert (entry.amount, entry.external_ref) == (1500, alice_purchase.stripe_session_id)
    assert balance_get(user=alice) == 5 + 1500
    alice_purchase.refresh_from_db()
    assert alice_purchase.status == Purchase.Status.PAID
    assert alice_purchase.ledger_entry == entry
    assert alice_purchase.stripe_payment_intent_id == event["data"]["object"]["payment_intent"]


def test_it_credits_a_delayed_payment_when_it_succeeds(alice, client, fake_stripe, alice_purchase):
    session_id = alice_purchase.stripe_session_id
    unpaid = completed_event(fake_stripe, session_id, payment_status="unpaid")

    post_event(client, unpaid)
    assert balance_get(user=alice) == 5
    assert Purchase.objects.get().status == Purchase.Status.PENDING

    succeeded = make_event("checkout.session.async_payment_succeeded", fake_stripe.pay(session_id))
    assert post_event(client, succeeded).status_code == 200
    assert balance_get(user=alice) == 5 + 1500
    assert Purchase.objects.get().status == Purchase.Status.PAID


@pytest.mark.parametrize(
    "attack",
    ["wrong_secret", "stale_timestamp", "tampered_body", "no_header", "garbage_header"],
)
def test_it_refuses_an_event_not_signed_by_stripe(
    alice, client, fake_stripe, alice_purchase, attack
):
    body = json.dumps(completed_event(fake_stripe, alice_purchase.stripe_session_id))
    header = sign(body)
    if attack == "wrong_secret":
        header = sign(body, secret="whsec_someone_else")
    elif attack == "stale_timestamp":
        header = sign(body, timestamp=int(time.time()) - 301)
    elif attack == "tampered_body":
        body = body.replace('"amount_total": 24900', '"amount_total": 100')
        assert '"amount_total": 100' in body
    elif attack == "garbage_header":
        header = "t=soon,v1=nope"
    headers = {} if attack == "no_header" else {"Stripe-Signature": header}

    response = client.post(WEBHOOK_URL, data=body, content_type="application/json", headers=headers)

    assert response.status_code == 400
    assert response.json()["error"] == "bad_signature"
    assert balance_get(user=alice) == 5
    assert not StripeEvent.objects.exists()
    assert Purchase.objects.get().status == Purchase.Status.PENDING


@pytest.mark.parametrize(
    "override",
    [{"amount_total": 100}, {"currency": "eur"}, {"amount_total": None}],
    ids=["amount", "currency", "no_amount"],
)
def test_it_does_not_credit_a_payment_that_does_not_match(
    alice, client, fake_stripe, alice_purchase, caplog, override
):
    event = completed_event(fake_stripe, alice_purchase.stripe_session_id, **override)

    with caplog.at_level(logging.WARNING, logger="payments"):
        response = post_event(client, event)

    assert response.status_code == 200  # authentic: Stripe must not keep retrying it
    assert balance_get(user=alice) == 5
    purchase = Purchase.objects.get()
    assert purchase.status == Purchase.Status.PENDING
    assert purchase.needs_review
    [record] = [r for r in caplog.records if r.name == "payments" and r.levelno >= logging.WARNING]
    assert record.purchase_id == str(purchase.pk)
    assert record.session_id == purchase.stripe_session_id


def test_it_does_not_credit_an_unknown_package_and_logs_it(alice, client, fake_stripe, caplog):
    session = {
        "id": "cs_test_not_ours",
        "object": "checkout.session",
        "payment_status": "paid",
        "status": "complete",
        "amount_total": 24900,
        "currency": "usd",
        "client_reference_id": str(alice.pk),
        "metadata": {
            "user_id": str(alice.pk),
            "package_id": "999999",
            "purchase_id": "not-a-purchase",
        },
        "payment_intent": "pi_test_x",
    }

    with caplog.at_level(logging.WARNING, logger="payments"):
        response = post_event(client, make_event("checkout.session.completed", session))

    assert response.status_code == 200
    assert balance_get(user=alice) == 5
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.PURCHASE).exists()
    [record] = [r for r in caplog.records if r.name == "payments" and r.levelno >= logging.WARNING]
    assert record.session_id == "cs_test_not_ours"
    assert "999999" in record.getMessage()
    assert StripeEvent.objects.get().outcome == StripeEvent.Outcome.UNKNOWN_PURCHASE


def test_it_does_not_credit_a_session_whose_package_differs_from_the_purchase(
    alice, client, fake_stripe, alice_purchase, caplog
):
    session = fake_stripe.sessions[alice_purchase.stripe_session_id]
    metadata = {**session["metadata"], "package_id": "999999"}
    event = completed_event(fake_stripe, alice_purchase.stripe_session_id, metadata=metadata)

    with caplog.at_level(logging.WARNING, logger="payments"):
        post_event(client, event)

    assert balance_get(user=alice) == 5
    assert any(getattr(r, "purchase_id", None) == str(alice_purchase.pk) for r in caplog.records)


def test_it_credits_a_purchase_whose_session_id_was_never_saved(
    alice, client, fake_stripe, alice_purchase
):
    # Stripe opened the session but we crashed (or timed out) before storing its id.
    session_id = alice_purchase.stripe_session_id
    Purchase.objects.filter(pk=alice_purchase.pk).update(stripe_session_id="", status="failed")

    post_event(client, completed_event(fake_stripe, session_id))

    assert balance_get(user=alice) == 5 + 1500
    purchase = Purchase.objects.get()
    assert (purchase.status, purchase.stripe_session_id) == (Purchase.Status.PAID, session_id)


def test_it_marks_an_expired_checkout(alice, client, fake_stripe, alice_purchase):
    session = {**fake_stripe.sessions[alice_purchase.stripe_session_id], "status": "expired"}

    post_event(client, make_event("checkout.session.expired", session))

    assert Purchase.objects.get().status == Purchase.Status.EXPIRED
    assert balance_get(user=alice) == 5


def test_it_acknowledges_event_types_it_does_not_handle(db, client, fake_stripe):
    response = post_event(
        client, make_event("customer.created", {"id": "cus_1", "object": "customer"})
    )

    assert response.status_code == 200
    assert not StripeEvent.objects.exists()


@pytest.mark.parametrize(
    "body",
    ["not json", "[1, 2]", json.dumps({"id": "evt_1", "type": "checkout.session.completed"})],
)
def test_it_answers_400_to_a_signed_but_malformed_body(alice, client, fake_stripe, body):
    response = post_event(client, body)

    assert response.status_code == 400
    assert balance_get(user=alice) == 5


def test_it_refuses_an_oversized_body(db, client, fake_stripe, settings):
    settings.WEBHOOK_MAX_BODY_BYTES = 1024
    event = make_event("customer.created", {"id": "cus_1", "padding": "x" * 2000})

    assert post_event(client, event).status_code == 413


def test_it_has_no_webhook_without_stripe_keys(db, client, settings):
    settings.STRIPE_SECRET_KEY = settings.STRIPE_WEBHOOK_SECRET = ""

    response = client.post(WEBHOOK_URL, data="{}", content_type="application/json")

    assert response.status_code == 404


def test_it_only_accepts_post(db, client, fake_stripe):
    assert client.get(WEBHOOK_URL).status_code == 405
