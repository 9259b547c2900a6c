"""ComfyDeploy's webhooks carry no event id: they are duplicated, reordered, retried as GET and
sometimes lost. Whatever order and however often they arrive, a terminal status is sticky,
intermediate statuses never move backwards, and a failed run is refunded exactly once."""

import pytest
from django.test import Client

from generations.models import Generation, GenerationEvent, Status
from generations.services import generations_reconcile
from tests.pipeline_fixtures import (
    assert_ledger_clean,
    balance,
    charges,
    image_outputs,
    queued_generation,
    refunds,
    run_concurrently,
    start,
    state,
    wait_until,
    webhook_post,
)

pytest_plugins = ["tests.pipeline_fixtures"]
pytestmark = pytest.mark.usefixtures("pipeline_settings")


@pytest.fixture
def generation(sim, alice_client, workflow) -> Generation:
    sim.configure(webhooks="none")
    return queued_generation(alice_client)


def _terminal_events(generation: Generation) -> list[str]:
    return list(
        generation.events.filter(
            status__in=["succeeded", "failed", "cancelled", "timed_out"]
        ).values_list("status", flat=True)
    )


@pytest.mark.django_db(transaction=True)
def test_it_refunds_once_when_a_failed_webhook_arrives_five_times_at_once(
    generation, alice
) -> None:
    assert balance(alice) == 3

    answers = run_concurrently(
        [lambda: webhook_post(generation, "failed", client=Client()) for _ in range(5)]
    )

    assert [a.status_code for a in answers] == [200] * 5, answers
    generation.refresh_from_db()
    assert generation.status == Status.FAILED
    assert "refunded" in generation.error
    assert (charges(generation), refunds(generation)) == (1, 1)
    assert _terminal_events(generation) == ["failed"]
    assert balance(alice) == 5
    assert_ledger_clean(alice)


@pytest.mark.django_db(transaction=True)
def test_it_refunds_once_when_webhooks_polling_and_the_watchdog_all_report_a_failure(
    generation, sim, settings, alice, alice_client
) -> None:
    settings.POLL_REFRESH_AFTER_SECONDS = 0
    settings.RUN_STALE_AFTER_SECONDS = 1
    sim.complete(generation.run_id, "failed")
    later = generation.created_at.replace(year=generation.created_at.year + 1)

    answers = run_concurrently(
        [lambda: webhook_post(generation, "failed", client=Client()).status_code for _ in range(4)]
        + [
            lambda: Client().get(f"/webhooks/comfydeploy/{generation.id}/x/").status_code
        ]  # forged: ignored
        + [
            lambda: alice_client.get(f"/api/v1/generations/{generation.id}").status_code
            for _ in range(1)
        ]
        + [lambda: generations_reconcile(now=later) and 200 for _ in range(3)]
    )

    assert answers == [200] * 4 + [404] + [200] + [200] * 3, answers
    generation.refresh_from_db()
    assert generation.status in (Status.FAILED, Status.TIMED_OUT)
    assert (charges(generation), refunds(generation)) == (1, 1)
    assert len(_terminal_events(generation)) == 1
    assert balance(alice) == 5
    assert_ledger_clean(alice)


@pytest.mark.django_db
def test_it_keeps_failed_when_running_arrives_after_it(generation, alice) -> None:
    assert webhook_post(generation, "failed").status_code == 200
    after_failure = state(generation)

    assert webhook_post(generation, "running").status_code == 200
    assert webhook_post(generation, "success", outputs=image_outputs()).status_code == 200
    assert webhook_post(generation, "failed").status_code == 200

    generation.refresh_from_db()
    assert generation.status == Status.FAILED
    assert refunds(generation) == 1 and balance(alice) == 5
    # Nothing but the "last heard from" time (and the late images) changed.
    assert state(generation)[:1] == after_failure[:1]
    assert _terminal_events(generation) == ["failed"]
    assert_ledger_clean(alice)


@pytest.mark.django_db
def test_it_keeps_succeeded_when_running_or_failed_arrive_after_it(generation, alice) -> None:
    assert webhook_post(generation, "success", outputs=image_outputs()).status_code == 200

    for late in ["running", "queued", "failed", "cancelled", "timeout", "success"]:
        assert webhook_post(generation, late).status_code == 200

    generation.refresh_from_db()
    assert generation.status == Status.SUCCEEDED
    assert generation.progress == 1.0
    assert [o["url"] for o in generation.images] == ["https://bucket.example/out/1.png"]
    assert (charges(generation), refunds(generation)) == (1, 0)
    assert balance(alice) == 3
    assert _terminal_events(generation) == ["succeeded"]


@pytest.mark.django_db
def test_it_never_moves_an_intermediate_status_backwards(generation) -> None:
    webhook_post(generation, "running", progress=0.45, live_status="Executing KSampler")
    webhook_post(generation, "queued", progress=0.0)
    webhook_post(generation, "not-started", progress=0.0)
    webhook_post(
        generation, "running", progress=0.1, live_status="Executing CheckpointLoaderSimple"
    )

    generation.refresh_from_db()
    assert generation.status == Status.RUNNING
    assert generation.progress == 0.45  # progress within a status only grows
    assert generation.started_at is not None
    # The "queued" event was recorded when the run was queued; stale deliveries add none.
    assert list(generation.events.values_list("status", flat=True)) == ["queued", "running"]


@pytest.mark.django_db
def test_it_keeps_progress_and_live_status(generation) -> None:
    webhook_post(generation, "running", progress=0.45, live_status="Executing KSampler")

    generation.refresh_from_db()
    assert (generation.status, generation.progress, generation.live_status) == (
        Status.RUNNING,
        0.45,
        "Executing KSampler",
    )


@pytest.mark.django_db
def test_it_asks_for_a_retry_while_the_run_is_not_registered_yet(alice, workflow) -> None:
    # The queue call has not returned (no run_id stored): a 4xx makes ComfyDeploy retry later.
    generation = Generation.objects.create(
        user=alice, workflow=workflow, cost=2, status=Status.PENDING
    )
    before = state(generation)

    response = webhook_post(generation, "running", run_id="5e1a7c2b-0d3f-4c11-9a8e-0000000000aa")

    assert response.status_code == 409
    assert state(generation) == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("markers", "final", "refunded"),
    [
        ("[sim:reorder]", Status.SUCCEEDED, 0),
        ("[sim:reorder] [sim:fail]", Status.FAILED, 1),
        ("[sim:duplicate]", Status.SUCCEEDED, 0),
        ("[sim:duplicate] [sim:fail]", Status.FAILED, 1),
        ("[sim:getretry]", Status.SUCCEEDED, 0),
        ("[sim:getretry] [sim:fail]", Status.FAILED, 1),
        ("[sim:cancel]", Status.CANCELLED, 1),
        ("[sim:timeout]", Status.TIMED_OUT, 1),
    ],
)
def test_it_settles_runs_whose_webhooks_are_reordered_duplicated_or_retried_as_get(
    markers: str, final: str, refunded: int, live_app, sim, alice, alice_client, workflow
) -> None:
    response = start(alice_client, f"a red fox {markers}")
    assert response.status_code == 201
    generation = Generation.objects.get(pk=response.json()["id"])
    upstream_final = {"succeeded": "success", "timed_out": "timeout"}.get(final, final)

    # Every delivery of the terminal status (and whatever comes after it) has been answered.
    def settled() -> bool:
        run = sim.run(generation.run_id)
        return run.is_terminal and not run.sending and not run.outbox

    assert wait_until(settled)
    assert wait_until(lambda: Generation.objects.get(pk=generation.pk).is_terminal)

    generation.refresh_from_db()
    assert generation.status == final, (
        generation.status,
        [d.body["status"] for d in sim.deliveries],
    )
    assert sim.run(generation.run_id).status == upstream_final
    assert (charges(generation), refunds(generation)) == (1, refunded)
    assert len(_terminal_events(generation)) == 1
    assert balance(alice) == 3 + 2 * refunded
    # Every authentic delivery is answered 200, duplicates and stale ones included; only one
    # that beats the queue call's answer gets a 409 (and its GET retry re-fetches the run).
    seen = [(d.method, d.body["status"], d.response_status) for d in sim.deliveries]
    assert all(
        code == 200 or (code == 409 and status in ("queued", "started"))
        for _m, status, code in seen
    ), seen
    assert {status: code for _m, status, code in seen}[upstream_final] == 200
    if final == Status.SUCCEEDED:
        assert len(generation.images) == 1
    assert generation.events.filter(source=GenerationEvent.Source.WEBHOOK).exists()
    assert_ledger_clean(alice)
