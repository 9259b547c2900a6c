"""A refunded run's message is written by a webhook or the watchdog, with no reader at hand: it is
stored in English and shown in each reader's language."""

import pytest
from django.urls import reverse

from credits.services import generation_charge
from generations.comfydeploy import RunSnapshot
from generations.models import Generation, Status
from generations.services import generation_apply_snapshot

pytestmark = pytest.mark.django_db


def _failed_by_webhook(user, workflow) -> Generation:
    generation = Generation.objects.create(
        user=user, workflow=workflow, cost=workflow.cost, status=Status.QUEUED, run_id="run-1"
    )
    generation_charge(generation=generation)
    snapshot = RunSnapshot(
        run_id="run-1", status="failed", progress=0.3, live_status="", outputs=[],
        created_at=None, queued_at=None, started_at=None, ended_at=None,
    )  # fmt: skip
    return generation_apply_snapshot(
        generation_id=generation.id, snapshot=snapshot, source="webhook"
    )


def test_it_shows_a_webhook_written_failure_in_the_readers_language(
    alice, alice_client, workflow
) -> None:
    generation = _failed_by_webhook(alice, workflow)
    assert generation.error == "The workflow failed on ComfyDeploy. Your credits were refunded."
    url = reverse("generation_detail", args=[generation.id])

    spanish = alice_client.get(url, HTTP_ACCEPT_LANGUAGE="es").content.decode()
    english = alice_client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()

    assert "El flujo de trabajo falló en ComfyDeploy." in spanish
    assert "The workflow failed on ComfyDeploy." in english


def test_it_keeps_the_api_error_in_english(alice, alice_client, workflow) -> None:
    generation = _failed_by_webhook(alice, workflow)
    body = alice_client.get(
        f"/api/v1/generations/{generation.id}", HTTP_ACCEPT_LANGUAGE="es"
    ).json()
    assert body["status"] == "failed"
    assert body["error"] == "The workflow failed on ComfyDeploy. Your credits were refunded."
