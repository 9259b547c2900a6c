"""When ComfyDeploy cannot take a run (5xx, refused connection, timeout, broken answer), the user
gets a clear 502 with the failed generation, their credits back exactly once, and no retried queue
POST (upstream has no idempotency: a retry could start and bill a second run). A webhook that
arrives later for such a run records its images but moves no credits."""

import uuid

import pytest

from generations.models import Generation, Status
from tests.pipeline_fixtures import (
    API,
    assert_ledger_clean,
    balance,
    charges,
    closed_port_url,
    image_outputs,
    refunds,
    start,
    wait_until,
    webhook_post,
)
from workflows.models import Workflow

pytest_plugins = ["tests.pipeline_fixtures"]
pytestmark = pytest.mark.usefixtures("pipeline_settings")

QUEUE = "/api/run/deployment/queue"


def _break_upstream(how: str, sim, settings) -> None:
    match how:
        case "http_500":
            sim.configure(queue_status=500)
        case "http_403_out_of_gpu_credits":
            sim.configure(queue_status=403)
        case "connection_refused":
            settings.SIMULATOR_URL = f"{closed_port_url()}/api"
        case "read_timeout":
            settings.COMFY_DEPLOY_READ_TIMEOUT = 0.3
            sim.configure(queue_delay=3.0)
        case "invalid_json":
            sim.configure(queue_malformed="invalid_json")
        case "no_run_id":
            sim.configure(queue_malformed="no_run_id")
        case "unknown_deployment":
            Workflow.objects.filter(slug="text-to-image").update(deployment_id=str(uuid.uuid4()))


FAILURES = [
    ("http_500", "HTTP 500"),
    ("http_403_out_of_gpu_credits", "GPU credits"),
    ("connection_refused", "connection refused"),
    ("read_timeout", "did not answer"),
    ("invalid_json", "invalid JSON"),
    ("no_run_id", "no run_id"),
    ("unknown_deployment", "Deployment not found"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("how", "reason"), FAILURES, ids=[f[0] for f in FAILURES])
def test_it_answers_502_and_refunds_once_when_the_queue_call_fails(
    how: str, reason: str, sim, settings, alice, alice_client, workflow
) -> None:
    _break_upstream(how, sim, settings)

    response = start(alice_client, "a red fox in snow")

    assert response.status_code == 502, response.content
    body = response.json()
    assert body["error"] == "upstream_error"
    assert reason in body["detail"]
    shown = body["generation"]
    assert shown["status"] == "failed"
    assert reason in shown["error"] and "refunded" in shown["error"]
    generation = Generation.objects.get(pk=shown["id"])
    assert generation.status == Status.FAILED
    assert (charges(generation), refunds(generation)) == (1, 1)
    assert balance(alice) == 5
    # Never retried: at most the one POST that failed reached ComfyDeploy.
    assert sim.count_requests("POST", QUEUE) == (0 if how == "connection_refused" else 1)
    assert alice_client.get(f"{API}/me").json()["active_generations"] == 0
    assert_ledger_clean(alice)


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["http_500", "connection_refused", "read_timeout", "invalid_json"])
def test_it_records_a_late_success_webhook_without_moving_credits(
    how: str, sim, settings, alice, alice_client, workflow
) -> None:
    _break_upstream(how, sim, settings)
    generation = Generation.objects.get(pk=start(alice_client).json()["generation"]["id"])
    run_id = str(uuid.uuid4())

    response = webhook_post(generation, "success", run_id=run_id, outputs=image_outputs())

    assert response.status_code == 200, response.content
    generation.refresh_from_db()
    assert generation.status == Status.FAILED  # terminal stays terminal
    assert [o["url"] for o in generation.images] == ["https://bucket.example/out/1.png"]
    assert (charges(generation), refunds(generation)) == (1, 1)
    assert balance(alice) == 5
    # Repeats change nothing either.
    assert (
        webhook_post(generation, "success", run_id=run_id, outputs=image_outputs()).status_code
        == 200
    )
    assert webhook_post(generation, "failed", run_id=run_id).status_code == 200
    generation.refresh_from_db()
    assert generation.status == Status.FAILED and len(generation.images) == 1
    assert refunds(generation) == 1 and balance(alice) == 5
    assert_ledger_clean(alice)


@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_images_of_a_run_that_started_although_the_queue_call_timed_out(
    live_app, sim, settings, alice, alice_client, workflow
) -> None:
    # The queue POST reached ComfyDeploy but answered too late: the run exists upstream and its
    # webhooks (to the URL we handed over) arrive after we refunded.
    settings.COMFY_DEPLOY_READ_TIMEOUT = 0.3
    sim.configure(queue_delay=0.6)

    response = start(alice_client, "a slow answer")

    assert response.status_code == 502
    generation = Generation.objects.get(pk=response.json()["generation"]["id"])
    assert wait_until(lambda: any(d.body["status"] == "success" for d in sim.deliveries))
    generation.refresh_from_db()
    assert generation.status == Status.FAILED
    assert len(generation.images) == 1
    assert generation.run_id in sim.runs
    assert all(d.response_status == 200 for d in sim.deliveries)
    assert (charges(generation), refunds(generation)) == (1, 1)
    assert balance(alice) == 5
    assert_ledger_clean(alice)
