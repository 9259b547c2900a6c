"""ComfyDeploy does not sign its webhooks, so the URL is the credential: an HMAC token bound to one
generation. Anything that is not an authentic delivery for that generation's run is refused and
changes nothing; no input, however broken, makes the webhook answer 500."""

import json

import pytest
from django.core import signing
from django.test import Client

from generations.models import Generation, Status
from generations.services import webhook_token, webhook_url_for
from tests.pipeline_fixtures import (
    image_outputs,
    post_json,
    queued_generation,
    refunds,
    state,
    webhook_path,
    webhook_post,
)

pytest_plugins = ["tests.pipeline_fixtures"]
pytestmark = [pytest.mark.usefixtures("pipeline_settings"), pytest.mark.django_db]


@pytest.fixture
def generation(sim, alice_client, workflow) -> Generation:
    sim.configure(webhooks="none")
    return queued_generation(alice_client)


def test_it_hands_comfydeploy_a_capability_url_for_the_generation(
    generation, sim, settings
) -> None:
    url = webhook_url_for(generation)

    assert (
        url
        == f"{settings.APP_URL}/webhooks/comfydeploy/{generation.id}/{webhook_token(generation.id)}/"
    )
    assert sim.run(generation.run_id).webhook == url
    # The token is not guessable from the id and is different for every generation.
    assert len(webhook_token(generation.id)) >= 20
    assert str(generation.id) not in webhook_token(generation.id)


FORGED = {
    "random": "dGhpcyBpcyBub3QgYSB0b2tlbg",
    "short": "x",
    "other_salt": lambda g: signing.Signer(salt="something.else").signature(str(g.id)),
    "other_key": lambda g: signing.Signer(
        key="not-our-secret", salt="generations.webhook"
    ).signature(str(g.id)),
    "signed_value": lambda g: (
        signing.Signer(salt="generations.webhook").sign(str(g.id)).replace("/", "")
    ),
    "huge": "x" * 5000,
    "non_ascii": "tökén-ñ",
    "percent_encoded_nul": "%00",
    "truncated": lambda g: webhook_token(g.id)[:-1],
    "uppercased": lambda g: webhook_token(g.id).upper(),
}


@pytest.mark.parametrize("kind", FORGED)
def test_it_refuses_a_forged_token_and_changes_nothing(kind: str, generation, sim) -> None:
    forged = FORGED[kind]
    token = forged(generation) if callable(forged) else forged
    before = state(generation)
    body = {
        "event_type": "run.updated",
        "status": "failed",
        "run_id": generation.run_id,
        "outputs": [],
    }

    posted = post_json(Client(), webhook_path(generation, token), body)
    fetched = Client().get(webhook_path(generation, token))

    assert (posted.status_code, fetched.status_code) == (404, 404)
    assert posted.json()["error"] == "not_found"
    assert state(generation) == before
    assert sim.count_requests("GET", f"/api/run/{generation.run_id}") == 0


def test_it_refuses_the_token_of_another_generation(generation, sim, bob, bob_client) -> None:
    bobs = queued_generation(bob_client)
    before = (state(generation), state(bobs))
    body = {"event_type": "run.updated", "status": "failed", "run_id": generation.run_id}

    response = post_json(Client(), webhook_path(generation, webhook_token(bobs.id)), body)

    assert response.status_code == 404
    assert (state(generation), state(bobs)) == before


def test_it_refuses_a_valid_token_for_a_generation_that_does_not_exist(generation) -> None:
    import uuid

    missing = uuid.uuid4()
    response = post_json(
        Client(),
        f"/webhooks/comfydeploy/{missing}/{webhook_token(missing)}/",
        {"status": "failed", "run_id": generation.run_id},
    )

    assert response.status_code == 404


def test_it_refuses_a_run_id_that_is_not_the_generations_and_changes_nothing(generation) -> None:
    before = state(generation)

    for run_id in ["5e1a7c2b-0d3f-4c11-9a8e-0000000000ff", "", "x" * 500, generation.run_id + "0"]:
        response = webhook_post(generation, "failed", run_id=run_id)
        assert response.status_code == 400, (run_id, response.content)

    assert state(generation) == before
    assert refunds(generation) == 0


def test_it_accepts_an_authentic_delivery_without_a_csrf_token(generation) -> None:
    strict = Client(enforce_csrf_checks=True)

    response = webhook_post(generation, "running", client=strict)

    assert response.status_code == 200
    assert Generation.objects.get(pk=generation.pk).status == Status.RUNNING


def test_it_re_fetches_the_run_upstream_on_a_get(generation, sim) -> None:
    # ComfyDeploy's retries arrive as GET: the body is not trusted, the API is asked instead.
    assert sim.wait_for(lambda: sim.run(generation.run_id).status == "running")

    response = Client().generic("GET", webhook_path(generation), json.dumps({"status": "failed"}))

    assert response.status_code == 200
    assert sim.count_requests("GET", f"/api/run/{generation.run_id}") == 1
    generation.refresh_from_db()
    assert generation.status == Status.RUNNING  # what upstream says, not what the body said
    assert generation.last_synced_at is not None
    assert refunds(generation) == 0


def test_it_accepts_a_webhook_signed_with_a_rotated_secret_key(generation, settings) -> None:
    old_token = webhook_token(generation.id)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-brand-new-secret-key-for-rotation-tests-0123456789"

    assert webhook_token(generation.id) != old_token
    response = post_json(
        Client(),
        webhook_path(generation, old_token),
        {"status": "running", "run_id": generation.run_id},
    )
    assert response.status_code == 200

    settings.SECRET_KEY_FALLBACKS = []
    response = post_json(
        Client(),
        webhook_path(generation, old_token),
        {"status": "running", "run_id": generation.run_id},
    )
    assert response.status_code == 404


def test_it_refuses_a_body_over_the_size_cap_before_reading_it(generation, settings) -> None:
    settings.WEBHOOK_MAX_BODY_BYTES = 1024
    before = state(generation)
    body = {"status": "failed", "run_id": generation.run_id, "padding": "x" * 2000}

    response = post_json(Client(), webhook_path(generation), body)

    assert response.status_code == 413
    assert state(generation) == before


def test_it_accepts_a_body_just_under_the_size_cap(generation, settings) -> None:
    settings.WEBHOOK_MAX_BODY_BYTES = 1024
    body = json.dumps({"status": "running", "run_id": generation.run_id, "padding": ""})
    body = body.replace('"padding": ""', '"padding": "' + "x" * (1024 - len(body)) + '"')
    assert len(body) == 1024

    assert post_json(Client(), webhook_path(generation), body).status_code == 200


JUNK = {
    "empty": b"",
    "not_json": b"this is not json",
    "truncated_json": b'{"status": "fail',
    "json_array": b"[]",
    "json_null": b"null",
    "json_string": b'"success"',
    "json_number": b"42",
    "no_run_id": b'{"status": "success"}',
    "no_status": b'{"run_id": "RUN"}',
    "run_id_not_a_string": b'{"run_id": 5, "status": "success"}',
    "status_not_a_string": b'{"run_id": "RUN", "status": ["success"]}',
    "status_empty": b'{"run_id": "RUN", "status": "  "}',
    "invalid_utf8": b'{"run_id": "RUN", "status": "\xff\xfe"}',
    "utf16": '{"run_id": "RUN", "status": "success"}'.encode("utf-16"),
    "deeply_nested": b"[" * 100_000,
    "deeply_nested_object": b'{"run_id": "RUN", "status": "failed", "outputs": '
    + b"[" * 100_000
    + b"}",
    "huge_number": b'{"run_id": "RUN", "status": "failed", "progress": 1' + b"0" * 5000 + b"}",
    "nul_in_run_id": b'{"run_id": "RUN\\u0000", "status": "failed"}',
    "surrogate_in_run_id": b'{"run_id": "RUN\\ud800", "status": "failed"}',
}


@pytest.mark.parametrize("kind", JUNK)
def test_it_answers_junk_with_a_4xx_and_changes_nothing(kind: str, generation) -> None:
    body = JUNK[kind].replace(b"RUN", generation.run_id.encode())
    before = state(generation)

    response = Client().post(webhook_path(generation), data=body, content_type="application/json")

    assert 400 <= response.status_code < 500, (response.status_code, response.content)
    assert response.json()["error"]
    # A 4xx for any of these, and the generation, its history and the credits are as they were.
    assert state(generation) == before


ODD_BUT_AUTHENTIC = {
    "unknown_status": {"status": "exploded"},
    "status_lone_surrogate": {"status": "\ud800"},
    "status_nul": {"status": "fail\u0000ed"},
    "live_status_control_characters": {"status": "running", "live_status": "a\u0000b\ud800c\n"},
    "progress_nan": {"status": "running", "progress": float("nan")},
    "progress_string": {"status": "running", "progress": "lots"},
    "progress_percent": {"status": "running", "progress": 45},
    "live_status_object": {"status": "running", "live_status": {"a": 1}},
    "live_status_huge": {"status": "running", "live_status": "x" * 100_000},
    "outputs_not_a_list": {"status": "running", "outputs": "everything"},
    "outputs_junk_items": {
        "status": "running",
        "outputs": [1, None, {"data": 5}, {"data": {"images": [None, 3]}}],
    },
}


@pytest.mark.parametrize("kind", ODD_BUT_AUTHENTIC)
def test_it_applies_odd_but_authentic_deliveries_without_an_error(kind: str, generation) -> None:
    body = {"event_type": "run.updated", "run_id": generation.run_id, **ODD_BUT_AUTHENTIC[kind]}

    response = post_json(Client(), webhook_path(generation), json.dumps(body))

    assert response.status_code == 200, response.content
    generation.refresh_from_db()
    assert generation.status in (Status.QUEUED, Status.RUNNING)
    assert 0 <= generation.progress <= 1
    assert len(generation.live_status) <= 255
    assert refunds(generation) == 0


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "https://bucket.example/\u0000.png",
        "https://bucket.example/" + "x" * 10_000 + ".png",
        "http://[::1",
        "https://bucket.example/\ud800.png",
    ],
)
def test_it_keeps_only_http_image_urls_from_a_success(url: str, generation) -> None:
    outputs = image_outputs(url) + image_outputs("https://bucket.example/good.png")

    response = webhook_post(generation, "success", outputs=outputs)

    assert response.status_code == 200
    generation.refresh_from_db()
    assert generation.status == Status.SUCCEEDED
    assert [o["url"] for o in generation.outputs] == ["https://bucket.example/good.png"]


@pytest.mark.parametrize("output_id", ["\u0000", "\ud800", "x" * 10_000, 5, None])
def test_it_stores_outputs_whatever_their_output_id(output_id: object, generation) -> None:
    outputs = [
        {"output_id": output_id, "data": {"images": [{"url": "https://bucket.example/1.png"}]}}
    ]

    response = webhook_post(generation, "success", outputs=outputs)

    assert response.status_code == 200
    generation.refresh_from_db()
    assert generation.status == Status.SUCCEEDED
    assert [o["url"] for o in generation.images] == ["https://bucket.example/1.png"]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_it_refuses_other_methods(method: str, generation) -> None:
    before = state(generation)

    response = Client().generic(method, webhook_path(generation), b'{"status": "failed"}')

    assert response.status_code == 405
    assert state(generation) == before
