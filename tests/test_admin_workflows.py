"""Workflows in the admin: created with their input fields inline, synced from the deployment on
ComfyDeploy (the simulator), test-run at the acting admin's expense, never deleted once used."""

from __future__ import annotations

import pytest
from django.urls import reverse

from credits.models import LedgerEntry
from credits.services import generation_charge
from generations.models import Generation
from tests.admin_fixtures import action_post, messages_of
from tests.conftest import set_balance_for_test
from workflows.models import Workflow, WorkflowInput

pytest_plugins = ["tests.admin_fixtures", "tests.simulator_fixtures"]
pytestmark = [pytest.mark.django_db]
CHANGELIST = "admin:workflows_workflow_changelist"


@pytest.fixture
def sunk_webhooks(webhook_receiver, settings) -> None:
    """Simulator webhooks go to a local sink rather than to whatever listens on APP_URL."""
    settings.APP_URL = webhook_receiver.url


def _used(workflow: Workflow, user) -> Generation:
    generation = Generation.objects.create(
        user=user, workflow=workflow, cost=workflow.cost, status="succeeded"
    )
    generation_charge(generation=generation)
    return generation


def _inline(prefix: str, rows: list[dict], initial: int = 0) -> dict:
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for i, row in enumerate(rows):
        data.update({f"{prefix}-{i}-{k}": v for k, v in row.items()})
    return data


def test_it_creates_a_workflow_with_its_input_fields_inline(staff_client) -> None:
    data = {
        "name": "Portraits",
        "slug": "portraits",
        "description": "Faces",
        "deployment_id": "5e1a7c2b-0d3f-4c11-9a8e-000000000009",
        "cost": "3",
        "is_active": "on",
        "position": "1",
        **_inline(
            "inputs",
            [
                {
                    "position": "0",
                    "input_id": "prompt",
                    "label": "Prompt",
                    "type": "long_text",
                    "required": "on",
                },
                {
                    "position": "1",
                    "input_id": "style",
                    "label": "Style",
                    "type": "choice",
                    "choices": "oil\nink",
                    "default": "ink",
                },
            ],
        ),
    }

    response = staff_client.post(reverse("admin:workflows_workflow_add"), data)

    assert response.status_code == 302
    workflow = Workflow.objects.get(slug="portraits")
    assert [(f.input_id, f.type, f.required) for f in workflow.inputs.all()] == [
        ("prompt", "long_text", True),
        ("style", "choice", False),
    ]
    page = staff_client.get(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
    assert b'name="inputs-1-choices"' in page.content


def test_it_refuses_a_choice_input_without_options(staff_client) -> None:
    data = {
        "name": "Broken",
        "slug": "broken",
        "deployment_id": "x",
        "cost": "1",
        "position": "0",
        **_inline(
            "inputs", [{"position": "0", "input_id": "style", "label": "Style", "type": "choice"}]
        ),
    }

    response = staff_client.post(reverse("admin:workflows_workflow_add"), data)

    assert response.status_code == 200
    assert not Workflow.objects.filter(slug="broken").exists()
    assert b"at least one option" in response.content


def test_it_syncs_inputs_from_comfydeploy(staff_client, workflow, app_simulator) -> None:
    prompt = workflow.inputs.get(input_id="prompt")
    prompt.label = "Describe your picture"  # staff wording survives a sync
    prompt.save()

    response = staff_client.post(reverse(CHANGELIST), action_post("sync_inputs", workflow.pk))

    assert response.status_code == 302
    fields = list(workflow.inputs.all())
    assert [(f.input_id, f.type, f.position) for f in fields] == [
        ("prompt", "long_text", 0),
        ("seed", "integer", 1),
        ("style", "choice", 2),
    ]
    assert fields[0].label == "Describe your picture"
    seed, style = fields[1], fields[2]
    assert (seed.default, seed.min_value, seed.max_value, seed.label) == (
        "42",
        0,
        2147483647,
        "Seed",
    )
    assert (style.choice_list, style.default) == (["photo", "illustration", "sketch"], "photo")
    assert any("synced 3 inputs" in m for m in messages_of(response))


def test_it_maps_image_and_boolean_inputs_and_drops_inputs_gone_upstream(
    staff_client, app_simulator
) -> None:
    deployment = app_simulator.add_deployment(
        "5e1a7c2b-0d3f-4c11-9a8e-00000000000a",
        [
            {
                "type": "string",
                "class_type": "ComfyUIDeployExternalImage",
                "input_id": "input_image",
                "default_value": None,
            },
            {
                "type": "boolean",
                "class_type": "ComfyUIDeployExternalBoolean",
                "input_id": "upscale",
                "default_value": True,
            },
            {
                "type": "float",
                "class_type": "ComfyUIDeployExternalNumber",
                "input_id": "cfg",
                "default_value": 7.5,
                "min_value": 1,
                "max_value": 20,
            },
            {
                "type": "string",
                "class_type": "ComfyUIDeployExternalText",
                "input_id": "caption",
                "default_value": "hi",
            },
        ],
    )
    workflow = Workflow.objects.create(name="Edit", slug="edit", deployment_id=deployment, cost=1)
    WorkflowInput.objects.create(workflow=workflow, input_id="obsolete", label="Gone")

    staff_client.post(
        reverse("admin:workflows_workflow_change", args=[workflow.pk]),
        {
            "CHANGE_FORM-action": "sync_inputs",
            "_selected_action": str(workflow.pk),
        },
    )

    assert {f.input_id: (f.type, f.default) for f in workflow.inputs.all()} == {
        "input_image": ("image_url", ""),
        "upscale": ("boolean", "true"),
        "cfg": ("number", "7.5"),
        "caption": ("text", "hi"),
    }


def test_it_reports_a_failed_sync_and_changes_nothing(
    staff_client, workflow, app_simulator
) -> None:
    workflow.deployment_id = "5e1a7c2b-0d3f-4c11-9a8e-0000000000ff"  # unknown upstream: a 500 there
    workflow.save()
    before = list(workflow.inputs.values_list("input_id", "type", "label"))

    response = staff_client.post(reverse(CHANGELIST), action_post("sync_inputs", workflow.pk))

    assert response.status_code == 302
    assert any("Could not read the deployment" in m for m in messages_of(response))
    assert list(workflow.inputs.values_list("input_id", "type", "label")) == before


def test_it_keeps_the_inputs_when_comfydeploy_lists_none(
    staff_client, workflow, app_simulator
) -> None:
    workflow.deployment_id = app_simulator.add_deployment(
        "5e1a7c2b-0d3f-4c11-9a8e-00000000000b", []
    )
    workflow.save()

    response = staff_client.post(reverse(CHANGELIST), action_post("sync_inputs", workflow.pk))

    assert any("reports no inputs" in m for m in messages_of(response))
    assert list(workflow.inputs.values_list("input_id", flat=True)) == ["prompt"]


def test_it_test_runs_a_workflow_charging_the_acting_admin(
    staff_client, staff, workflow, app_simulator, sunk_webhooks
) -> None:
    before = LedgerEntry.objects.filter(user=staff).count()

    response = staff_client.post(reverse(CHANGELIST), action_post("test_run", workflow.pk))

    assert response.status_code == 302
    generation = Generation.objects.get(user=staff, workflow=workflow)
    assert generation.status == "queued"
    assert generation.run_id in app_simulator.runs
    assert generation.inputs["prompt"].startswith("Admin test run")
    charge = LedgerEntry.objects.get(generation=generation)
    assert (charge.kind, charge.amount, charge.user) == ("generation_charge", -2, staff)
    assert LedgerEntry.objects.filter(user=staff).count() == before + 1
    assert any(
        "charged 2 credits to your own account (staff@example.com)" in m
        for m in messages_of(response)
    )


def test_it_explains_a_test_run_the_admin_cannot_afford(
    staff_client, staff, workflow, app_simulator
) -> None:
    set_balance_for_test(staff, 1)

    response = staff_client.post(reverse(CHANGELIST), action_post("test_run", workflow.pk))

    assert response.status_code == 302
    assert not Generation.objects.exists()
    assert any("costs 2 credits and your balance is 1" in m for m in messages_of(response))


def test_it_refuses_to_delete_a_workflow_that_has_runs(staff_client, alice, workflow) -> None:
    _used(workflow, alice)
    delete = reverse("admin:workflows_workflow_delete", args=[workflow.pk])

    page = staff_client.get(delete)
    post = staff_client.post(delete, {"post": "yes"})
    bulk = staff_client.post(
        reverse(CHANGELIST), action_post("delete_selected", workflow.pk, post="yes")
    )

    for response in (page, post):
        assert response.status_code == 302
        assert response.url == reverse("admin:workflows_workflow_change", args=[workflow.pk])
    assert bulk.status_code == 302
    assert Workflow.objects.filter(pk=workflow.pk).exists()
    assert any("Deactivate it instead" in m for m in messages_of(post))
    assert any("Deactivate it instead" in m for m in messages_of(bulk))


def test_it_deletes_a_workflow_that_never_ran(staff_client, workflow) -> None:
    other = Workflow.objects.create(name="Spare", slug="spare", deployment_id="x", cost=1)

    single = staff_client.post(
        reverse("admin:workflows_workflow_delete", args=[workflow.pk]), {"post": "yes"}
    )
    bulk = staff_client.post(
        reverse(CHANGELIST), action_post("delete_selected", other.pk, post="yes")
    )

    assert single.status_code == bulk.status_code == 302
    assert not Workflow.objects.exists()
    assert not WorkflowInput.objects.exists()


def test_it_keeps_workflow_actions_from_staff_without_change_permission(
    clerk_client, workflow
) -> None:
    response = clerk_client.post(reverse(CHANGELIST), action_post("test_run", workflow.pk))

    assert response.status_code in (200, 302)
    assert not Generation.objects.exists()
