"""The watchdog settles what webhooks did not: runs never queued (a crash between charge and queue),
runs not heard from lately (lost webhooks) and runs stuck upstream (ComfyDeploy reports those only
after 24 hours, without a webhook). Each is refunded at most once, however often it runs."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from credits.services import generation_charge
from generations.models import Generation, GenerationEvent, Status
from generations.services import generations_reconcile
from generations.tasks import watchdog
from tests.pipeline_fixtures import (
    assert_ledger_clean,
    balance,
    charges,
    closed_port_url,
    queued_generation,
    refunds,
    wait_until,
)

pytest_plugins = ["tests.pipeline_fixtures"]
pytestmark = [pytest.mark.usefixtures("pipeline_settings")]


def _after(seconds: int) -> timezone.datetime:
    return timezone.now() + timedelta(seconds=seconds + 1)


@pytest.fixture
def quiet(sim, workflow) -> None:
    """No webhook reaches the app: only the watchdog can learn what happened."""
    sim.configure(webhooks="none")


@pytest.mark.django_db
@pytest.mark.usefixtures("quiet")
def test_it_times_out_cancels_and_refunds_a_run_that_never_reports(
    sim, settings, alice, alice_client
) -> None:
    generation = queued_generation(alice_client, "a quiet lake [sim:stuck]")
    assert balance(alice) == 3

    report = generations_reconcile(now=_after(settings.RUN_TIMEOUT_SECONDS))

    assert report.timed_out == 1
    generation.refresh_from_db()
    assert generation.status == Status.TIMED_OUT
    assert "too long" in generation.error and "refunded" in generation.error
    assert (charges(generation), refunds(generation)) == (1, 1)
    assert balance(alice) == 5
    # Cancelled upstream so it stops burning GPU time.
    assert sim.count_requests("POST", f"/api/run/{generation.run_id}/cancel") == 1
    assert sim.run(generation.run_id).status == "cancelled"
    assert (
        generation.events.filter(
            source=GenerationEvent.Source.WATCHDOG, status=Status.TIMED_OUT
        ).count()
        == 1
    )

    # Later passes change nothing.
    again = generations_reconcile(now=_after(settings.RUN_TIMEOUT_SECONDS * 2))
    assert (again.timed_out, again.rechecked) == (0, 0)
    assert refunds(generation) == 1 and balance(alice) == 5
    assert_ledger_clean(alice)


@pytest.mark.django_db
@pytest.mark.usefixtures("quiet")
def test_it_times_out_through_the_management_command(sim, settings, alice, alice_client) -> None:
    generation = queued_generation(alice_client, "a quiet lake [sim:stuck]")
    settings.RUN_TIMEOUT_SECONDS = 0
    out = StringIO()

    call_command("reconcile_generations", stdout=out)

    assert "1 timed out" in out.getvalue()
    generation.refresh_from_db()
    assert generation.status == Status.TIMED_OUT
    assert refunds(generation) == 1 and balance(alice) == 5
    call_command("reconcile_generations", stdout=StringIO())
    assert refunds(generation) == 1 and balance(alice) == 5
    assert_ledger_clean(alice)


@pytest.mark.django_db(transaction=True)
def test_it_reports_timed_out_even_when_the_cancel_webhook_reaches_the_app(
    live_app, sim, settings, alice, alice_client, workflow
) -> None:
    generation = queued_generation(alice_client, "a quiet lake [sim:stuck]")
    assert wait_until(lambda: Generation.objects.get(pk=generation.pk).status == Status.RUNNING)

    generations_reconcile(now=_after(settings.RUN_TIMEOUT_SECONDS))

    # Upstream's "cancelled" webhook for our own cancel is heard too, and changes nothing.
    assert wait_until(lambda: any(d.body["status"] == "cancelled" for d in sim.deliveries))
    generation.refresh_from_db()
    assert generation.status == Status.TIMED_OUT
    assert refunds(generation) == 1 and balance(alice) == 5
    assert_ledger_clean(alice)


@pytest.mark.django_db
@pytest.mark.usefixtures("quiet")
def test_it_still_times_out_and_refunds_when_upstream_cannot_be_reached(
    sim, settings, alice, alice_client
) -> None:
    generation = queued_generation(alice_client, "a quiet lake [sim:stuck]")
    settings.SIMULATOR_URL = f"{closed_port_url()}/api"

    generations_reconcile(now=_after(settings.RUN_TIMEOUT_SECONDS))

    generation.refresh_from_db()
    assert generation.status == Status.TIMED_OUT
    assert refunds(generation) == 1 and balance(alice) == 5


def _charged_but_never_queued(user, workflow) -> Generation:
    # What a crash between the charge's commit and the queue call leaves behind.
    generation = Generation.objects.create(
        user=user, workflow=workflow, cost=workflow.cost, status=Status.PENDING
    )
    generation_charge(generation=generation)
    return generation


@pytest.mark.django_db
def test_it_fails_and_refunds_a_charged_run_that_never_got_queued(
    sim, settings, alice, workflow
) -> None:
    generation = _charged_but_never_queued(alice, workflow)
    assert balance(alice) == 3

    # Not yet: its queue call may still be on its way.
    assert generations_reconcile().failed_unqueued == 0
    assert Generation.objects.get(pk=generation.pk).status == Status.PENDING

    report = generations_reconcile(now=_after(settings.RUN_STALE_AFTER_SECONDS))

    assert report.failed_unqueued == 1
    generation.refresh_from_db()
    assert generation.status == Status.FAILED
    assert "refunded" in generation.error
    assert (charges(generation), refunds(generation)) == (1, 1)
    assert balance(alice) == 5
    assert generations_reconcile(now=_after(settings.RUN_TIMEOUT_SECONDS)).failed_unqueued == 0
    assert refunds(generation) == 1
    assert not sim.requests  # nothing to ask upstream about
    assert_ledger_clean(alice)


@pytest.mark.django_db
@pytest.mark.usefixtures("quiet")
def test_it_re_fetches_a_run_not_heard_from_lately(sim, settings, alice, alice_client) -> None:
    generation = queued_generation(alice_client, "a lighthouse")
    assert sim.wait_for(lambda: sim.run(generation.run_id).status == "success", timeout=10)

    # Heard from at queue time: not stale yet, so upstream is not asked.
    assert generations_reconcile().rechecked == 0
    assert sim.count_requests("GET", f"/api/run/{generation.run_id}") == 0

    report = generations_reconcile(now=_after(settings.RUN_STALE_AFTER_SECONDS))

    assert (report.rechecked, report.changed) == (1, 1)
    generation.refresh_from_db()
    assert generation.status == Status.SUCCEEDED
    assert len(generation.images) == 1
    assert (charges(generation), refunds(generation)) == (1, 0)
    assert generation.events.filter(
        source=GenerationEvent.Source.WATCHDOG, status=Status.SUCCEEDED
    ).exists()
    assert balance(alice) == 3


@pytest.mark.django_db
@pytest.mark.usefixtures("quiet")
def test_it_refunds_once_a_stale_run_that_failed_upstream(
    sim, settings, alice, alice_client
) -> None:
    generation = queued_generation(alice_client, "a lighthouse [sim:fail]")
    assert sim.wait_for(lambda: sim.run(generation.run_id).status == "failed", timeout=10)

    generations_reconcile(now=_after(settings.RUN_STALE_AFTER_SECONDS))
    generations_reconcile(now=_after(settings.RUN_STALE_AFTER_SECONDS * 2))

    generation.refresh_from_db()
    assert generation.status == Status.FAILED
    assert (charges(generation), refunds(generation)) == (1, 1)
    assert balance(alice) == 5
    assert_ledger_clean(alice)


@pytest.mark.django_db
@pytest.mark.usefixtures("quiet")
def test_it_leaves_a_stale_run_alone_when_upstream_cannot_be_reached(
    sim, settings, alice, alice_client
) -> None:
    generation = queued_generation(alice_client, "a lighthouse")
    settings.SIMULATOR_URL = f"{closed_port_url()}/api"

    report = generations_reconcile(now=_after(settings.RUN_STALE_AFTER_SECONDS))

    assert (report.rechecked, report.changed) == (1, 0)
    generation.refresh_from_db()
    assert generation.status == Status.QUEUED
    assert refunds(generation) == 0 and balance(alice) == 3


def _scheduled() -> list[DBTaskResult]:
    return list(DBTaskResult.objects.filter(task_path=watchdog.module_path, status="READY"))


@pytest.mark.django_db
@pytest.mark.usefixtures("quiet")
def test_it_runs_the_watchdog_task_and_schedules_exactly_one_next_pass(
    sim, settings, alice, alice_client
) -> None:
    generation = queued_generation(alice_client, "a quiet lake [sim:stuck]")
    settings.RUN_TIMEOUT_SECONDS = 0
    assert _scheduled() == []

    summary = watchdog.call()

    assert "1 timed out" in summary
    assert Generation.objects.get(pk=generation.pk).status == Status.TIMED_OUT
    (next_pass,) = _scheduled()
    expected = timezone.now() + timedelta(seconds=settings.WATCHDOG_INTERVAL_SECONDS)
    assert abs((next_pass.run_after - expected).total_seconds()) < 60

    # Running again (or scheduling by hand) never piles up a second chain of passes.
    watchdog.call()
    call_command("reconcile_generations", "--schedule", stdout=StringIO())
    assert len(_scheduled()) == 1


@pytest.mark.django_db
def test_it_schedules_the_watchdog_from_the_command_once(sim) -> None:
    out = StringIO()

    call_command("reconcile_generations", "--schedule", stdout=out)
    call_command("reconcile_generations", "--schedule", stdout=out)

    assert out.getvalue().splitlines() == ["watchdog task queued", "watchdog task already queued"]
    assert len(_scheduled()) == 1
