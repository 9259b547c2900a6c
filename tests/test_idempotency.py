"""``Idempotency-Key`` on ``POST /api/v1/generations``: a retry (or twenty at once) of the same
request runs and charges once and gets the original answer back; the same key with another body is
a 409; keys are per user and expire after 24 hours."""
# ruff: noqa: F811 (pytest fixtures are imported by name and requested as arguments)

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from apikeys.services import api_key_create
from credits.models import CreditBalance, LedgerEntry
from generations.models import Generation, IdempotencyRecord
from generations.simulator import Simulator
from tests.conftest import set_balance_for_test
from tests.simulator_fixtures import app_simulator, simulator  # noqa: F401  (fixtures)

QUEUE = "/api/run/deployment/queue"
# A deadlock guard, not a timing assertion.
WAIT = 60


@pytest.fixture(autouse=True)
def _room_for_several_runs(settings) -> None:
    # Simulated runs never report back here (no webhook reaches the test), so they stay active.
    settings.MAX_CONCURRENT_RUNS = 10


def _post(client: Client, body: dict | str, key: str | None, token: str) -> tuple[int, bytes]:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    content = body if isinstance(body, str) else json.dumps(body)
    response = client.post(
        "/api/v1/generations", content, content_type="application/json", **headers
    )
    return response.status_code, response.content


def _charges(user) -> int:
    return LedgerEntry.objects.filter(user=user, kind=LedgerEntry.Kind.GENERATION_CHARGE).count()


@pytest.mark.django_db(transaction=True)
def test_it_runs_and_charges_once_for_twenty_concurrent_requests_with_one_key(
    alice,
    workflow,
    app_simulator: Simulator,
) -> None:
    _key, token = api_key_create(user=alice, name="retrying script")
    body = {"workflow": workflow.slug, "inputs": {"prompt": "a lighthouse at dusk"}}
    # A slow upstream keeps the first request busy while the others arrive.
    app_simulator.configure(queue_delay=0.3)
    barrier = threading.Barrier(20)
    answers: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def submit() -> None:
        try:
            barrier.wait(WAIT)
            answer = _post(Client(), body, "order-7f3a", token)
            with lock:
                answers.append(answer)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads), "a request is stuck"

    assert errors == []
    assert len(answers) == 20
    assert {status for status, _ in answers} == {201}
    assert len({content for _, content in answers}) == 1, "every request got the very same body"
    generation = Generation.objects.get(user=alice)
    assert json.loads(answers[0][1])["id"] == str(generation.id)
    assert app_simulator.count_requests("POST", QUEUE) == 1
    assert _charges(alice) == 1
    assert CreditBalance.objects.get(user=alice).balance == 3


@pytest.mark.django_db
def test_it_replays_the_original_answer_to_a_later_retry(
    alice, workflow, app_simulator: Simulator
) -> None:
    _key, token = api_key_create(user=alice, name="cron")
    client = Client()
    first = _post(
        client, {"workflow": workflow.slug, "inputs": {"prompt": "a cat"}}, "retry-1", token
    )
    # The same JSON written differently (key order, spacing) is the same request.
    again = _post(
        client, '{ "inputs": {"prompt": "a cat"},  "workflow": "text-to-image" }', "retry-1", token
    )

    assert first[0] == again[0] == 201
    assert first[1] == again[1]
    assert Generation.objects.filter(user=alice).count() == 1
    assert app_simulator.count_requests("POST", QUEUE) == 1
    assert _charges(alice) == 1

    # No key: every request is a new generation.
    assert (
        _post(client, {"workflow": workflow.slug, "inputs": {"prompt": "a cat"}}, None, token)[0]
        == 201
    )
    assert _charges(alice) == 2


@pytest.mark.django_db
def test_it_refuses_the_same_key_with_a_different_body(
    alice, workflow, app_simulator: Simulator
) -> None:
    _key, token = api_key_create(user=alice, name="cron")
    client = Client()
    assert (
        _post(client, {"workflow": workflow.slug, "inputs": {"prompt": "a cat"}}, "k-42", token)[0]
        == 201
    )

    status, content = _post(
        client, {"workflow": workflow.slug, "inputs": {"prompt": "a dog"}}, "k-42", token
    )

    assert status == 409
    assert json.loads(content)["error"] == "idempotency_key_reused"
    assert _charges(alice) == 1
    assert app_simulator.count_requests("POST", QUEUE) == 1


@pytest.mark.django_db
def test_it_forgets_a_key_after_24_hours(alice, workflow, app_simulator: Simulator) -> None:
    _key, token = api_key_create(user=alice, name="cron")
    client = Client()
    body = {"workflow": workflow.slug, "inputs": {"prompt": "a cat"}}
    first = _post(client, body, "daily", token)
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=24, minutes=1))

    later = _post(client, body, "daily", token)

    assert later[0] == 201
    assert json.loads(later[1])["id"] != json.loads(first[1])["id"]
    assert _charges(alice) == 2
    assert IdempotencyRecord.objects.count() == 1, "the expired record was pruned"


@pytest.mark.django_db
def test_it_lets_a_refused_request_be_retried_with_the_same_key(
    alice, workflow, app_simulator: Simulator
) -> None:
    _key, token = api_key_create(user=alice, name="cron")
    set_balance_for_test(alice, 1)
    client = Client()
    body = {"workflow": workflow.slug, "inputs": {"prompt": "a cat"}}

    refused = _post(client, body, "buy-then-retry", token)
    assert refused[0] == 402
    assert _charges(alice) == 0

    set_balance_for_test(alice, 5)
    assert _post(client, body, "buy-then-retry", token)[0] == 201
    assert _charges(alice) == 1


@pytest.mark.django_db
def test_it_keeps_each_users_keys_apart(alice, bob, workflow, app_simulator: Simulator) -> None:
    _alices, alice_token = api_key_create(user=alice, name="a")
    _bobs, bob_token = api_key_create(user=bob, name="b")
    body = {"workflow": workflow.slug, "inputs": {"prompt": "a cat"}}

    alices = _post(Client(), body, "same-key", alice_token)
    bobs = _post(Client(), body, "same-key", bob_token)

    assert alices[0] == bobs[0] == 201
    assert json.loads(bobs[1])["id"] != json.loads(alices[1])["id"]
    assert _charges(alice) == _charges(bob) == 1


@pytest.mark.django_db
def test_it_documents_the_idempotency_key_header() -> None:
    operation = Client().get("/api/v1/openapi.json").json()["paths"]["/api/v1/generations"]["post"]
    header = next(p for p in operation["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header"
    assert header["required"] is False
    assert "409" in operation["responses"]
