"""The JSON API keeps the contract of design.md's Interfaces table exactly: paths, field names,
status codes and ``{"error", "detail"}`` errors, so scripts written against it keep working."""

import json
from datetime import datetime

import pytest
from django.test import Client

from credits.models import LedgerEntry
from generations.models import Generation, Status
from tests.conftest import make_workflow
from tests.pipeline_fixtures import API, balance, post_json, start, webhook_post
from workflows.models import Workflow, WorkflowInput

pytest_plugins = ["tests.pipeline_fixtures"]
pytestmark = [pytest.mark.usefixtures("pipeline_settings"), pytest.mark.django_db]

GENERATION_FIELDS = {
    "id",
    "workflow",
    "status",
    "cost",
    "inputs",
    "outputs",
    "error",
    "progress",
    "live_status",
    "created_at",
    "updated_at",
}
LEDGER_FIELDS = {"id", "kind", "amount", "balance_after", "reason", "generation", "created_at"}
STATUSES = {"pending", "queued", "running", "succeeded", "failed", "cancelled", "timed_out"}


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _assert_generation_shape(shown: dict) -> None:
    assert set(shown) == GENERATION_FIELDS
    assert shown["status"] in STATUSES
    assert isinstance(shown["cost"], int)
    assert isinstance(shown["inputs"], dict)
    assert isinstance(shown["error"], str) and isinstance(shown["live_status"], str)
    assert 0 <= shown["progress"] <= 1
    for output in shown["outputs"]:
        assert set(output) == {"url", "type"}
    _iso(shown["created_at"]), _iso(shown["updated_at"])


def test_it_describes_the_signed_in_user(alice_client, sim, workflow, settings) -> None:
    settings.MAX_CONCURRENT_RUNS = 3
    sim.configure(webhooks="none")
    start(alice_client, "fox [sim:stuck]")

    response = alice_client.get(f"{API}/me")

    assert response.status_code == 200
    assert response.json() == {
        "email": "alice@example.com",
        "balance": 3,
        "active_generations": 1,
        "max_concurrent_runs": 3,
    }


def test_it_lists_active_workflows_with_their_inputs(alice_client) -> None:
    workflow = make_workflow()
    WorkflowInput.objects.create(
        workflow=workflow,
        input_id="seed",
        label="Seed",
        type="integer",
        default="42",
        min_value=0,
        max_value=99,
        position=2,
    )
    WorkflowInput.objects.create(
        workflow=workflow,
        input_id="style",
        label="Style",
        type="choice",
        choices="photo\nsketch",
        default="photo",
        position=3,
    )
    Workflow.objects.create(
        name="Hidden", slug="hidden", deployment_id="x", cost=1, is_active=False
    )

    response = alice_client.get(f"{API}/workflows")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results"}
    (shown,) = body["results"]
    assert {k: shown[k] for k in ("slug", "name", "description", "cost")} == {
        "slug": "text-to-image",
        "name": "Text to image",
        "description": "Describe a picture",
        "cost": 2,
    }
    assert set(shown) == {"slug", "name", "description", "cost", "inputs"}
    prompt, seed, style = shown["inputs"]
    for field in (prompt, seed, style):
        assert {"input_id", "type", "label", "required", "default"} <= set(field)
    assert (prompt["input_id"], prompt["type"], prompt["required"], prompt["default"]) == (
        "prompt",
        "long_text",
        True,
        None,
    )
    assert prompt["max_length"] == 2000
    assert (seed["type"], seed["default"], seed["min_value"], seed["max_value"]) == (
        "integer",
        42,
        0,
        99,
    )
    assert (style["type"], style["default"], style["choices"]) == (
        "choice",
        "photo",
        ["photo", "sketch"],
    )


def test_it_renders_a_generation_with_exactly_the_contract_fields(
    alice_client, sim, workflow
) -> None:
    response = start(alice_client, "a red fox")

    assert response.status_code == 201
    created = response.json()
    _assert_generation_shape(created)
    assert created["workflow"] == "text-to-image"
    assert created["status"] == "queued"
    assert created["cost"] == 2
    assert created["inputs"] == {"prompt": "a red fox"}
    assert (created["outputs"], created["error"], created["progress"]) == ([], "", 0.0)

    generation = Generation.objects.get(pk=created["id"])
    webhook_post(
        generation, "success", outputs=[{"data": {"images": [{"url": "https://b.example/1.png"}]}}]
    )
    shown = alice_client.get(f"{API}/generations/{generation.id}").json()
    _assert_generation_shape(shown)
    assert shown["status"] == "succeeded"
    assert shown["outputs"] == [{"url": "https://b.example/1.png", "type": "image"}]
    assert shown["progress"] == 1.0


def test_it_paginates_own_generations_newest_first(alice_client, alice, bob) -> None:
    workflow = make_workflow()
    created = [
        Generation.objects.create(user=alice, workflow=workflow, cost=2, status=Status.SUCCEEDED)
        for _ in range(25)
    ]
    Generation.objects.create(user=bob, workflow=workflow, cost=2, status=Status.SUCCEEDED)

    first = alice_client.get(f"{API}/generations").json()
    assert {"results", "next"} <= set(first)
    assert len(first["results"]) == 20
    for shown in first["results"]:
        _assert_generation_shape(shown)
    assert first["next"]
    second = alice_client.get(first["next"]).json()
    assert len(second["results"]) == 5
    assert second["next"] is None

    ids = [g["id"] for g in first["results"] + second["results"]]
    assert ids == [str(g.id) for g in reversed(created)]
    past_the_end = alice_client.get(f"{API}/generations?page=99").json()
    assert past_the_end["results"] == [] and past_the_end["next"] is None


def test_it_paginates_own_ledger_entries_newest_first(
    alice_client, alice, bob, sim, workflow
) -> None:
    sim.configure(queue_status=500)
    assert start(alice_client).status_code == 502  # a charge and its refund

    body = alice_client.get(f"{API}/ledger").json()

    assert {"results", "next"} <= set(body)
    assert body["next"] is None
    entries = body["results"]
    for entry in entries:
        assert set(entry) == LEDGER_FIELDS
        _iso(entry["created_at"])
    generation = Generation.objects.get(user=alice)
    assert [(e["kind"], e["amount"], e["balance_after"]) for e in entries] == [
        ("generation_refund", 2, 5),
        ("generation_charge", -2, 3),
        ("signup_bonus", 5, 5),
    ]
    assert [e["generation"] for e in entries] == [str(generation.id), str(generation.id), None]
    assert all(isinstance(e["id"], int) and isinstance(e["reason"], str) for e in entries)
    # bob's entries are his own.
    assert LedgerEntry.objects.filter(user=bob).count() == 1


def test_it_paginates_a_long_ledger(alice_client, alice) -> None:
    from credits.services import credits_adjust

    for n in range(1, 25):
        credits_adjust(user=alice, amount=n, reason=f"gift {n}", actor=None)

    first = alice_client.get(f"{API}/ledger").json()
    second = alice_client.get(first["next"]).json()

    assert len(first["results"]) == 20 and len(second["results"]) == 5
    reasons = [e["reason"] for e in first["results"] + second["results"]]
    assert reasons[:2] == ["gift 24", "gift 23"]
    assert len(set(e["id"] for e in first["results"] + second["results"])) == 25


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/me"),
        ("get", "/workflows"),
        ("get", "/generations"),
        ("get", "/generations/5e1a7c2b-0d3f-4c11-9a8e-000000000001"),
        ("get", "/ledger"),
        ("post", "/generations"),
    ],
)
def test_it_answers_401_json_without_a_session(method: str, path: str, workflow) -> None:
    client = Client()
    if method == "post":
        response = post_json(
            client, f"{API}{path}", {"workflow": "text-to-image", "inputs": {"prompt": "x"}}
        )
    else:
        response = client.get(f"{API}{path}")

    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "not_authenticated" and body["detail"]
    assert not Generation.objects.exists()


def test_it_refuses_a_session_post_without_the_csrf_token_and_charges_nothing(
    alice, sim, workflow
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = post_json(
        client, f"{API}/generations", {"workflow": "text-to-image", "inputs": {"prompt": "x"}}
    )

    assert response.status_code == 403
    assert response.json()["error"] == "csrf_failed"
    assert not Generation.objects.exists()
    assert balance(alice) == 5
    assert not sim.requests


def test_it_accepts_a_session_post_with_the_csrf_token(alice, sim, workflow) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    token = "aBcDeFgHiJkLmNoPqRsTuVwXyZ012345"  # a CSRF secret, as the cookie carries it
    client.cookies["csrftoken"] = token

    response = post_json(
        client,
        f"{API}/generations",
        {"workflow": "text-to-image", "inputs": {"prompt": "x"}},
        HTTP_X_CSRFTOKEN=token,
    )

    assert response.status_code == 201, response.content


def test_it_publishes_an_openapi_schema_with_every_endpoint(client) -> None:
    response = client.get(f"{API}/openapi.json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    paths = schema["paths"]
    assert {
        "/api/v1/me",
        "/api/v1/workflows",
        "/api/v1/generations",
        "/api/v1/generations/{generation_id}",
        "/api/v1/ledger",
    } <= set(paths)
    assert {"get", "post"} <= set(paths["/api/v1/generations"])
    assert {"201", "400", "402", "404", "429", "502"} <= set(
        paths["/api/v1/generations"]["post"]["responses"]
    )
