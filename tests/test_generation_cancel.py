"""Staff can cancel a run (upstream too) and re-check it against ComfyDeploy; a cancel refunds
exactly once and never touches a run that is already over."""

import pytest

from generations.models import Generation, GenerationEvent, Status
from generations.services import generation_cancel, generation_recheck
from tests.conftest import make_user
from tests.pipeline_fixtures import (
    assert_ledger_clean,
    balance,
    charges,
    queued_generation,
    refunds,
    webhook_post,
)

pytest_plugins = ["tests.pipeline_fixtures"]
pytestmark = [pytest.mark.usefixtures("pipeline_settings"), pytest.mark.django_db]


@pytest.fixture
def generation(sim, alice_client, workflow) -> Generation:
    sim.configure(webhooks="none")
    return queued_generation(alice_client)


def test_it_cancels_upstream_and_refunds_once(generation, sim, staff, alice) -> None:
    cancelled = generation_cancel(generation=generation, actor=staff)

    assert cancelled.status == Status.CANCELLED
    assert "refunded" in cancelled.error
    assert sim.run(generation.run_id).status == "cancelled"
    assert (charges(generation), refunds(generation)) == (1, 1)
    assert balance(alice) == 5
    event = generation.events.get(status=Status.CANCELLED)
    assert event.source == GenerationEvent.Source.ADMIN
    assert staff.email in f"{event.upstream_status} {event.detail}"

    # Again, or after upstream's own "cancelled" webhook: nothing more.
    generation_cancel(generation=Generation.objects.get(pk=generation.pk), actor=staff)
    webhook_post(generation, "cancelled")
    assert refunds(generation) == 1 and balance(alice) == 5
    assert_ledger_clean(alice)


def test_it_records_who_cancelled_whatever_the_length_of_their_email(generation, alice) -> None:
    long_email = "a.very.long.staff.member.name@operations.example.com"
    staff = make_user(long_email, is_staff=True)

    cancelled = generation_cancel(generation=generation, actor=staff)

    assert cancelled.status == Status.CANCELLED
    event = generation.events.get(status=Status.CANCELLED)
    assert long_email in f"{event.upstream_status} {event.detail}"
    assert refunds(generation) == 1 and balance(alice) == 5


def test_it_does_not_cancel_or_refund_a_run_that_already_succeeded(
    generation, sim, staff, alice
) -> None:
    webhook_post(generation, "success")
    generation.refresh_from_db()

    result = generation_cancel(generation=generation, actor=staff)

    assert result.status == Status.SUCCEEDED
    assert refunds(generation) == 0 and balance(alice) == 3
    assert sim.count_requests("POST", f"/api/run/{generation.run_id}/cancel") == 0


def test_it_re_checks_a_run_upstream_on_demand(generation, sim, alice) -> None:
    assert sim.wait_for(lambda: sim.run(generation.run_id).status == "running")

    result = generation_recheck(generation=generation)

    assert result.status == Status.RUNNING
    assert sim.count_requests("GET", f"/api/run/{generation.run_id}") == 1
    assert generation.events.filter(
        source=GenerationEvent.Source.ADMIN, status=Status.RUNNING
    ).exists()
