"""Charging credits under real concurrency: real threads, real PostgreSQL transactions.

The balance row lock (``SELECT ... FOR UPDATE``) must turn a stampede of charges into a queue:
no double spending, no negative balance, and one user's lock never holds up another user.
"""

import threading
from collections import Counter
from collections.abc import Callable

import pytest
from django.db import OperationalError, connection, transaction
from django.db.models import Sum

from credits.models import CreditBalance, LedgerEntry
from credits.services import InsufficientCredits, balance_lock, generation_charge
from generations.models import Generation
from tests.conftest import set_balance_for_test
from workflows.models import Workflow

# Generous deadlock guards, not timing assertions: a healthy run finishes in well under a second.
WAIT = 30
# The shared PostgreSQL allows 100 connections in total (other test runs use some too), so the
# threads are released together by a barrier but at most this many hold a connection at once;
# that is still dozens of transactions fighting over the same balance row at the same moment.
MAX_DB_CONNECTIONS = 30


def _workflow(cost: int = 1) -> Workflow:
    return Workflow.objects.create(
        name="Text to image", slug=f"t2i-{cost}", deployment_id="test-deployment", cost=cost
    )


def _generations(user, workflow: Workflow, count: int) -> list[Generation]:
    return [
        Generation.objects.create(user=user, workflow=workflow, cost=workflow.cost, inputs={})
        for _ in range(count)
    ]


def _run_in_threads(targets: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck (deadlock?)"


def _assert_ledger_consistent(user) -> None:
    balance = CreditBalance.objects.get(user=user).balance
    total = LedgerEntry.objects.filter(user=user).aggregate(total=Sum("amount"))["total"] or 0
    assert balance >= 0
    assert balance == total


def _charge_all_at_once(generations: list[Generation]) -> Counter:
    """Charge every generation from its own thread, all released together by a barrier."""
    barrier = threading.Barrier(len(generations))
    connections = threading.BoundedSemaphore(MAX_DB_CONNECTIONS)
    outcomes: Counter = Counter()
    lock = threading.Lock()

    def charge(generation: Generation) -> Callable[[], None]:
        def run() -> None:
            outcome = "no answer"
            try:
                barrier.wait(WAIT)
                with connections:
                    try:
                        generation_charge(generation=generation)
                        outcome = "charged"
                    except InsufficientCredits:
                        outcome = "refused"
                    finally:
                        connection.close()
            except Exception as exc:
                outcome = f"error: {exc!r}"
            with lock:
                outcomes[outcome] += 1

        return run

    _run_in_threads([charge(generation) for generation in generations])
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_three_of_a_hundred_simultaneous_charges_through(alice) -> None:
    workflow = _workflow(cost=1)
    set_balance_for_test(alice, 3)
    generations = _generations(alice, workflow, 100)

    outcomes = _charge_all_at_once(generations)

    # Every thread got a real answer: 3 charges, 97 clean refusals, no errors.
    assert outcomes == Counter({"charged": 3, "refused": 97})
    assert CreditBalance.objects.get(user=alice).balance == 0
    charges = LedgerEntry.objects.filter(user=alice, kind=LedgerEntry.Kind.GENERATION_CHARGE)
    assert charges.count() == 3
    # The balance never went below zero on the way down: each charge saw the one before it.
    assert list(charges.order_by("id").values_list("balance_after", flat=True)) == [2, 1, 0]
    assert charges.values("generation").distinct().count() == 3
    _assert_ledger_consistent(alice)


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_charge_larger_than_the_balance_without_writing_anything(alice) -> None:
    generation = _generations(alice, _workflow(cost=7), 1)[0]
    entries_before = LedgerEntry.objects.filter(user=alice).count()

    with pytest.raises(InsufficientCredits) as refused:
        generation_charge(generation=generation)

    assert refused.value.code == "insufficient_credits"
    assert "7" in refused.value.message and "5" in refused.value.message
    assert CreditBalance.objects.get(user=alice).balance == 5
    assert LedgerEntry.objects.filter(user=alice).count() == entries_before


@pytest.mark.django_db(transaction=True)
def test_it_charges_bob_while_alices_balance_is_locked(alice, bob) -> None:
    workflow = _workflow(cost=1)
    alice_generation = _generations(alice, workflow, 1)[0]
    bob_generation = _generations(bob, workflow, 1)[0]
    alice_locked = threading.Event()
    bob_done = threading.Event()
    probe_done = threading.Event()
    seen: dict[str, object] = {}

    def hold_alices_lock() -> None:
        try:
            with transaction.atomic():
                balance_lock(user_id=alice.pk)
                alice_locked.set()
                # Keep the lock until bob's charge and the probe below have both finished.
                seen["bob_done_while_alice_locked"] = bob_done.wait(WAIT)
                probe_done.wait(WAIT)
        finally:
            alice_locked.set()
            connection.close()

    def charge_bob() -> None:
        try:
            alice_locked.wait(WAIT)
            seen["bob_entry"] = generation_charge(generation=bob_generation)
            bob_done.set()
        finally:
            connection.close()

    def probe_alice() -> None:
        # Control: alice's own charge really is waiting for the lock (it gives up after a
        # short lock_timeout instead of hanging), so bob finishing above proves independence.
        try:
            alice_locked.wait(WAIT)
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '300ms'")
                generation_charge(generation=alice_generation)
            seen["alice_probe"] = "charged"
        except OperationalError:
            seen["alice_probe"] = "blocked"
        finally:
            probe_done.set()
            connection.close()

    _run_in_threads([hold_alices_lock, charge_bob, probe_alice])

    assert seen["bob_done_while_alice_locked"] is True
    assert seen["bob_entry"].balance_after == 4
    assert seen["alice_probe"] == "blocked"
    assert CreditBalance.objects.get(user=bob).balance == 4
    # Once the lock is gone alice is charged normally.
    generation_charge(generation=alice_generation)
    assert CreditBalance.objects.get(user=alice).balance == 4
    _assert_ledger_consistent(alice)
    _assert_ledger_consistent(bob)


@pytest.mark.django_db(transaction=True)
def test_it_keeps_two_users_results_separate_under_simultaneous_charges(alice, bob) -> None:
    workflow = _workflow(cost=1)
    set_balance_for_test(alice, 4)
    set_balance_for_test(bob, 6)
    generations = _generations(alice, workflow, 10) + _generations(bob, workflow, 10)

    outcomes = _charge_all_at_once(generations)

    assert outcomes == Counter({"charged": 10, "refused": 10})
    assert CreditBalance.objects.get(user=alice).balance == 0
    assert CreditBalance.objects.get(user=bob).balance == 0
    charged = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.GENERATION_CHARGE)
    assert charged.filter(user=alice).count() == 4
    assert charged.filter(user=bob).count() == 6
    # Nobody paid for someone else's generation.
    assert not charged.filter(user=alice, generation__user=bob).exists()
    assert not charged.filter(user=bob, generation__user=alice).exists()
    _assert_ledger_consistent(alice)
    _assert_ledger_consistent(bob)
