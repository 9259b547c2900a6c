"""A stampede of ``POST /api/v1/generations`` by one user (a double-clicking browser, a script in
a loop) starts no more runs than the user can pay for and no more than MAX_CONCURRENT_RUNS at
once: the balance row lock serialises the starts, and the cap is counted after taking it."""

from collections import Counter

import pytest
from django.core.management import call_command

from generations.models import Generation, Status
from tests.conftest import set_balance_for_test
from tests.pipeline_fixtures import (
    API,
    assert_ledger_clean,
    balance,
    login,
    queued_generation,
    run_concurrently,
    start,
    webhook_post,
)

pytest_plugins = ["tests.pipeline_fixtures"]
pytestmark = [pytest.mark.usefixtures("pipeline_settings"), pytest.mark.django_db(transaction=True)]

QUEUE = "/api/run/deployment/queue"


def test_it_accepts_exactly_two_of_a_hundred_simultaneous_starts(
    sim, settings, alice, workflow
) -> None:
    settings.MAX_CONCURRENT_RUNS = 2
    sim.configure(webhooks="none")
    set_balance_for_test(alice, 3 * workflow.cost)  # enough for three runs
    clients = [login(alice) for _ in range(100)]

    answers = run_concurrently([lambda c=c: start(c, "a red fox [sim:stuck]") for c in clients])

    codes = Counter(a.status_code if hasattr(a, "status_code") else repr(a) for a in answers)
    assert codes[201] == 2, codes
    assert set(codes) <= {201, 402, 429}, codes
    for answer in answers:
        if answer.status_code != 201:
            assert answer.json()["error"] in ("too_many_active_generations", "insufficient_credits")
            assert answer.json()["detail"]
    assert balance(alice) == 3 * workflow.cost - 2 * workflow.cost
    generations = Generation.objects.filter(user=alice)
    assert generations.count() == 2
    assert set(generations.values_list("status", flat=True)) == {Status.QUEUED}
    # Exactly the two accepted runs were queued upstream.
    assert sim.count_requests("POST", QUEUE) == 2
    assert_ledger_clean(alice)
    call_command("check_ledger")


def test_it_counts_the_cap_after_taking_the_lock(
    sim, settings, alice, alice_client, workflow
) -> None:
    settings.MAX_CONCURRENT_RUNS = 2
    sim.configure(webhooks="none")
    set_balance_for_test(alice, 100)

    for _round in range(3):
        # Two runs active; one of them finishes; two new requests race for the freed slot.
        active = list(Generation.objects.filter(user=alice).active())
        while len(active) < 2:
            active.append(queued_generation(alice_client))
        assert webhook_post(active[0], "success").status_code == 200
        clients = [login(alice), login(alice)]

        answers = run_concurrently(
            [lambda c=c: start(c, "another fox [sim:stuck]") for c in clients]
        )

        assert sorted(a.status_code for a in answers) == [201, 429], answers
        assert Generation.objects.filter(user=alice).active().count() == 2
        assert alice_client.get(f"{API}/me").json()["active_generations"] == 2

    assert Generation.objects.filter(user=alice).count() == 2 + 3
    assert balance(alice) == 100 - 5 * workflow.cost
    assert_ledger_clean(alice)


def test_it_answers_402_when_the_credits_run_out_before_the_cap(
    sim, settings, alice, alice_client, workflow
) -> None:
    settings.MAX_CONCURRENT_RUNS = 10
    sim.configure(webhooks="none")
    set_balance_for_test(alice, 2 * workflow.cost + 1)
    clients = [login(alice) for _ in range(20)]

    answers = run_concurrently([lambda c=c: start(c, "a red fox [sim:stuck]") for c in clients])

    assert Counter(a.status_code for a in answers) == Counter({201: 2, 402: 18})
    assert balance(alice) == 1
    assert sim.count_requests("POST", QUEUE) == 2
    assert_ledger_clean(alice)


def test_it_does_not_let_one_users_stampede_block_another_user(
    sim, settings, alice, bob, workflow
) -> None:
    settings.MAX_CONCURRENT_RUNS = 2
    sim.configure(webhooks="none")
    alices = [login(alice) for _ in range(20)]
    bobs = [login(bob) for _ in range(2)]

    answers = run_concurrently([lambda c=c: start(c, "fox [sim:stuck]") for c in alices + bobs])

    assert Counter(a.status_code for a in answers[:20]) == Counter({201: 2, 429: 18})
    assert [a.status_code for a in answers[20:]] == [201, 201]
    assert (balance(alice), balance(bob)) == (1, 1)
    assert_ledger_clean(alice, bob)
