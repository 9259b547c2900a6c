"""The same paid Checkout reaching us several times at once (Stripe retries overlapping, or two
events for one session) credits it once: real threads, real transactions."""

import threading

import pytest
from django.db import connection
from django.test import Client

from credits.models import LedgerEntry
from credits.services import balance_get
from payments.models import Purchase, StripeEvent
from tests.payments_fixtures import completed_event, make_event, post_event

pytest_plugins = ["tests.payments_fixtures"]
pytestmark = pytest.mark.usefixtures("in_english")

DELIVERIES = 5


def _deliver_concurrently(events: list[dict]) -> list[int]:
    barrier = threading.Barrier(len(events))
    statuses: list[int] = []

    def deliver(event: dict) -> None:
        try:
            barrier.wait(timeout=10)
            statuses.append(post_event(Client(), event).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return statuses


@pytest.mark.django_db(transaction=True)
def test_it_credits_the_same_event_delivered_five_times_at_once_once(
    alice, fake_stripe, alice_purchase
):
    event = completed_event(fake_stripe, alice_purchase.stripe_session_id)

    statuses = _deliver_concurrently([event] * DELIVERIES)

    assert statuses == [200] * DELIVERIES
    assert LedgerEntry.objects.filter(user=alice, kind=LedgerEntry.Kind.PURCHASE).count() == 1
    assert balance_get(user=alice) == 5 + 1500
    assert StripeEvent.objects.count() == 1
    assert Purchase.objects.get().status == Purchase.Status.PAID


@pytest.mark.django_db(transaction=True)
def test_it_credits_once_when_different_events_for_one_session_race(
    alice, fake_stripe, alice_purchase
):
    session_id = alice_purchase.stripe_session_id
    completed = completed_event(fake_stripe, session_id)
    succeeded = make_event("checkout.session.async_payment_succeeded", fake_stripe.pay(session_id))
    replayed = [{**completed, "id": f"evt_replay_{n}"} for n in range(DELIVERIES - 2)]

    statuses = _deliver_concurrently([completed, succeeded, *replayed])

    assert statuses == [200] * DELIVERIES
    assert LedgerEntry.objects.filter(user=alice, kind=LedgerEntry.Kind.PURCHASE).count() == 1
    assert balance_get(user=alice) == 5 + 1500
    assert StripeEvent.objects.filter(outcome=StripeEvent.Outcome.CREDITED).count() == 1
