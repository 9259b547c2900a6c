"""Runs in the admin: a read-only record (inputs, outputs, status history) and two operator actions
that go through the generation services: re-check upstream, and cancel-and-refund exactly once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from credits.models import CreditBalance, LedgerEntry
from credits.services import generation_charge
from generations.models import Generation, GenerationEvent
from generations.services import generation_start
from tests.admin_fixtures import action_post, messages_of

pytest_plugins = ["tests.admin_fixtures", "tests.simulator_fixtures"]
pytestmark = [pytest.mark.django_db]
CHANGELIST = "admin:generations_generation_changelist"


@pytest.fixture
def sunk_webhooks(webhook_receiver, settings) -> None:
    settings.APP_URL = webhook_receiver.url


def _balance(user) -> int:
    return CreditBalance.objects.get(user=user).balance


def _stuck_run(user, workflow) -> Generation:
    """A real run queued on the simulator that never finishes by itself."""
    generation = generation_start(
        user=user, workflow=workflow, inputs={"prompt": "[sim:stuck] a lighthouse"}
    )
    assert generation.status == "queued"
    return generation


def _made(user, workflow, **fields) -> Generation:
    generation = Generation.objects.create(
        user=user, workflow=workflow, cost=workflow.cost, **fields
    )
    generation_charge(generation=generation)
    return generation


def test_it_lists_runs_with_status_user_workflow_cost_age_and_run_id(
    staff_client, alice, workflow
) -> None:
    _made(alice, workflow, status="running", run_id="run-abc", inputs={"prompt": "a fox"})

    page = staff_client.get(reverse(CHANGELIST))

    assert page.status_code == 200
    html = page.content.decode()
    for text in (
        "alice@example.com",
        "Text to image",
        "run-abc",
        "a fox",
        "column-age",
        "column-cost",
    ):
        assert text in html


def test_it_filters_runs_by_status_workflow_and_stuck(
    staff_client, alice, workflow, settings
) -> None:
    running = _made(alice, workflow, status="running", inputs={"prompt": "a"})
    done = _made(alice, workflow, status="succeeded", inputs={"prompt": "b"})
    stale = timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS + 5)
    Generation.objects.filter(pk=running.pk).update(last_synced_at=stale)

    def ids(**params: str) -> set:
        return {
            g.pk for g in staff_client.get(reverse(CHANGELIST), params).context["cl"].result_list
        }

    assert ids(status__exact="succeeded") == {done.pk}
    assert ids(workflow__id__exact=str(workflow.pk)) == {running.pk, done.pk}
    assert ids(stuck="yes") == {running.pk}
    # Search by email, run id or the generation's own id (a non-UUID term is no error).
    assert ids(q="alice@example") == {running.pk, done.pk}
    assert ids(q=str(done.pk)) == {done.pk}


def test_it_shows_a_run_read_only_with_inputs_outputs_and_history(
    staff_client, alice, workflow
) -> None:
    generation = _made(
        alice,
        workflow,
        status="succeeded",
        inputs={"prompt": "a red fox"},
        outputs=[
            {"url": "https://cdn.example/fox.png", "type": "image", "output_id": "output_images"},
            {"url": "javascript:alert(1)", "type": "image", "output_id": "x"},
        ],
    )
    GenerationEvent.objects.create(
        generation=generation, status="queued", upstream_status="queued", source="webhook"
    )
    GenerationEvent.objects.create(
        generation=generation, status="succeeded", upstream_status="success", source="poll"
    )

    page = staff_client.get(reverse("admin:generations_generation_change", args=[generation.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert "&quot;prompt&quot;: &quot;a red fox&quot;" in html
    assert '<img src="https://cdn.example/fox.png"' in html
    assert 'href="javascript:' not in html and 'src="javascript:' not in html
    history = next(
        f for f in page.context["inline_admin_formsets"] if f.opts.model is GenerationEvent
    )
    assert [form.instance.upstream_status for form in history.formset.forms] == [
        "queued",
        "success",
    ]
    assert b'name="_save"' not in page.content
    # Its charge is linked, and the link finds exactly that ledger entry.
    charge = LedgerEntry.objects.get(generation=generation)
    link = f"{reverse('admin:credits_ledgerentry_changelist')}?id={charge.pk}"
    assert link in html
    assert list(staff_client.get(link).context["cl"].result_list) == [charge]


def test_it_refuses_adding_changing_or_deleting_runs(staff_client, alice, workflow) -> None:
    generation = _made(alice, workflow, status="running")
    change = reverse("admin:generations_generation_change", args=[generation.pk])
    delete = reverse("admin:generations_generation_delete", args=[generation.pk])

    assert staff_client.get(reverse("admin:generations_generation_add")).status_code == 403
    assert staff_client.post(change, {"status": "succeeded", "cost": "0"}).status_code == 403
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    generation.refresh_from_db()
    assert (generation.status, generation.cost) == ("running", 2)


def test_it_cancels_and_refunds_once_when_the_action_runs_twice(
    staff_client, staff, alice, workflow, app_simulator, sunk_webhooks
) -> None:
    generation = _stuck_run(alice, workflow)
    assert _balance(alice) == 3

    first = staff_client.post(reverse(CHANGELIST), action_post("cancel_and_refund", generation.pk))
    second = staff_client.post(reverse(CHANGELIST), action_post("cancel_and_refund", generation.pk))

    generation.refresh_from_db()
    assert generation.status == "cancelled"
    assert LedgerEntry.objects.filter(generation=generation, kind="generation_refund").count() == 1
    assert _balance(alice) == 5
    assert app_simulator.run(generation.run_id).status == "cancelled"
    assert any("Cancelled 1 run" in m for m in messages_of(first))
    assert any("already finished" in m for m in messages_of(second))
    assert GenerationEvent.objects.filter(generation=generation, status="cancelled").count() == 1
    # The status history says which admin cancelled it.
    event = GenerationEvent.objects.get(generation=generation, status="cancelled")
    assert "staff@example.com" in f"{event.upstream_status} {event.detail}"


def test_it_cancels_from_the_run_page(staff_client, alice, workflow) -> None:
    generation = _made(
        alice, workflow, status="pending"
    )  # never queued: nothing to cancel upstream
    change = reverse("admin:generations_generation_change", args=[generation.pk])

    response = staff_client.post(
        change, {"CHANGE_FORM-action": "cancel_and_refund", "_selected_action": str(generation.pk)}
    )

    assert response.status_code == 302
    generation.refresh_from_db()
    assert generation.status == "cancelled"
    assert _balance(alice) == 5


def test_it_rechecks_a_run_upstream(
    staff_client, alice, workflow, app_simulator, sunk_webhooks
) -> None:
    generation = _stuck_run(alice, workflow)
    app_simulator.complete(generation.run_id, "success")

    response = staff_client.post(
        reverse(CHANGELIST), action_post("recheck_upstream", generation.pk)
    )

    assert response.status_code == 302
    generation.refresh_from_db()
    assert generation.status == "succeeded"
    assert generation.images
    assert GenerationEvent.objects.filter(
        generation=generation, status="succeeded", source="admin"
    ).exists()
    assert any("1 changed status" in m for m in messages_of(response))


def test_it_keeps_the_operator_actions_from_staff_without_the_permission(
    clerk_client, alice, workflow
) -> None:
    generation = _made(alice, workflow, status="pending")

    response = clerk_client.post(
        reverse(CHANGELIST), action_post("cancel_and_refund", generation.pk)
    )
    page = clerk_client.get(reverse(CHANGELIST))

    assert response.status_code in (200, 302)
    generation.refresh_from_db()
    assert generation.status == "pending"
    assert _balance(alice) == 3
    assert page.context["action_form"] is None
