"""A generation is refunded at most once, however many times and however concurrently it is asked.

Duplicated webhooks, a polling view and the watchdog may all try to refund the same failed run;
the user must get their credits back exactly once.
"""

import threading

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum

from credits.models import CreditBalance, LedgerEntry
from credits.services import generation_charge, generation_refund
from generations.models import Generation
from workflows.models import Workflow

WAIT = 30
ATTEMPTS = 20


def _charged_generation(user, cost: int = 2) -> Generation:
    workflow = Workflow.objects.create(
        name="Text to image", slug=f"t2i-{cost}", deployment_id="test-deployment", cost=cost
    )
    generation = Generation.objects.create(user=user, workflow=workflow, cost=cost, inputs={})
    generation_charge(generation=generation)
    return generation


def _refunds(generation: Generation):
    return LedgerEntry.objects.filter(
        generation=generation, kind=LedgerEntry.Kind.GENERATION_REFUND
    )


def _balance(user) -> int:
    return CreditBalance.objects.get(user=user).balance


def _ledger_sum(user) -> int:
    return LedgerEntry.objects.filter(user=user).aggregate(total=Sum("amount"))["total"] or 0


@pytest.mark.django_db
def test_it_refunds_once_when_asked_twenty_times_in_a_row(alice) -> None:
    generation = _charged_generation(alice, cost=2)
    assert _balance(alice) == 3

    results = [generation_refund(generation=generation) for _ in range(ATTEMPTS)]

    assert results[0] is not None and results[0].amount == 2
    assert results[1:] == [None] * (ATTEMPTS - 1)
    assert _refunds(generation).count() == 1
    assert _balance(alice) == 5 == _ledger_sum(alice)


@pytest.mark.django_db(transaction=True)
def test_it_refunds_once_when_asked_twenty_times_at_once(alice) -> None:
    generation = _charged_generation(alice, cost=2)
    barrier = threading.Barrier(ATTEMPTS)
    answers: list[object] = []
    lock = threading.Lock()

    def refund() -> None:
        try:
            barrier.wait(WAIT)
            answer: object = generation_refund(generation=generation)
        except Exception as exc:
            answer = f"error: {exc!r}"
        finally:
            connection.close()
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=refund) for _ in range(ATTEMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)

    refunded = [answer for answer in answers if isinstance(answer, LedgerEntry)]
    assert len(answers) == ATTEMPTS
    assert len(refunded) == 1, answers
    assert answers.count(None) == ATTEMPTS - 1
    assert _refunds(generation).count() == 1
    assert _balance(alice) == 5 == _ledger_sum(alice)


@pytest.mark.django_db
def test_it_refunds_the_amount_charged_even_after_a_price_change(alice) -> None:
    generation = _charged_generation(alice, cost=3)
    Workflow.objects.filter(pk=generation.workflow_id).update(cost=1)
    generation.refresh_from_db()

    entry = generation_refund(generation=generation, reason="run failed upstream")

    assert entry.amount == 3
    assert entry.reason == "run failed upstream"
    assert entry.generation_id == generation.pk
    assert _balance(alice) == 5


@pytest.mark.django_db
def test_it_does_not_refund_a_generation_that_was_never_charged(alice) -> None:
    workflow = Workflow.objects.create(
        name="Text to image", slug="t2i", deployment_id="test-deployment", cost=2
    )
    generation = Generation.objects.create(user=alice, workflow=workflow, cost=2, inputs={})

    assert generation_refund(generation=generation) is None

    assert not LedgerEntry.objects.filter(generation=generation).exists()
    assert _balance(alice) == 5


@pytest.mark.django_db
def test_it_lets_the_database_refuse_a_second_refund_or_charge(alice) -> None:
    # Even code that bypasses the services cannot write a second refund or charge.
    generation = _charged_generation(alice, cost=2)
    generation_refund(generation=generation)

    for kind, amount in [
        (LedgerEntry.Kind.GENERATION_REFUND, 2),
        (LedgerEntry.Kind.GENERATION_CHARGE, -2),
    ]:
        with pytest.raises(IntegrityError), transaction.atomic():
            LedgerEntry.objects.create(
                user=alice, kind=kind, amount=amount, balance_after=5, generation=generation
            )
    with pytest.raises(IntegrityError), transaction.atomic():
        generation_charge(generation=generation)

    assert LedgerEntry.objects.filter(generation=generation).count() == 2
    assert _balance(alice) == 5 == _ledger_sum(alice)
