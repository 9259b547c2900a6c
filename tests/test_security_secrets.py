"""The ComfyDeploy API key and the webhook tokens never reach a browser: not in a page, not in the
API, not in the OpenAPI schema, not in a static file. The key lives in the server's environment
and is only ever sent to ComfyDeploy; a webhook token only ever travels to ComfyDeploy too."""

from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse

from generations.models import Status
from generations.services import generation_recheck, generation_start, webhook_token
from tests.conftest import set_balance_for_test
from tests.simulator_fixtures import start_simulator

SECRET_KEY_FOR_COMFYDEPLOY = "cd_live_5ecret_DO-NOT-LEAK_0123456789abcdef"


@pytest.fixture(autouse=True)
def _isolated(settings) -> None:
    settings.APP_URL = "http://127.0.0.1:9"


@pytest.fixture
def real_looking_upstream(settings):
    """A ComfyDeploy fake that only accepts the secret key, configured as production would be."""
    sim = start_simulator(api_key=SECRET_KEY_FOR_COMFYDEPLOY)
    settings.COMFY_DEPLOY_API_KEY = SECRET_KEY_FOR_COMFYDEPLOY
    settings.COMFY_DEPLOY_API_URL = sim.url
    yield sim
    sim.stop()


@pytest.fixture
def finished_generation(alice, workflow, real_looking_upstream):
    set_balance_for_test(alice, 20)
    generation = generation_start(user=alice, workflow=workflow, inputs={"prompt": "a fox"})
    assert generation.status == Status.QUEUED  # the key worked upstream
    assert real_looking_upstream.wait_for(
        lambda: real_looking_upstream.run(generation.run_id).is_terminal
    )
    generation = generation_recheck(generation=generation, source="poll")
    assert generation.status == Status.SUCCEEDED
    return generation


def _assert_clean(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


@pytest.mark.django_db
def test_it_never_sends_the_comfydeploy_key_or_a_webhook_token_to_the_owner(
    finished_generation, alice_client
) -> None:
    token = webhook_token(finished_generation.id)
    urls = [
        reverse("dashboard"),
        reverse("history"),
        reverse("generation_detail", args=[finished_generation.id]),
        reverse("credits"),
        "/api/v1/me",
        "/api/v1/workflows",
        "/api/v1/generations",
        f"/api/v1/generations/{finished_generation.id}",
        "/api/v1/ledger",
        "/api/v1/openapi.json",
    ]

    for url in urls:
        response = alice_client.get(url)
        assert response.status_code == 200, url
        _assert_clean(response.content.decode(), SECRET_KEY_FOR_COMFYDEPLOY, token)


@pytest.mark.django_db
def test_it_never_shows_the_comfydeploy_key_in_the_admin(finished_generation, staff) -> None:
    client = Client()
    client.force_login(staff)
    urls = [
        reverse("admin:generations_generation_changelist"),
        reverse("admin:generations_generation_change", args=[finished_generation.pk]),
        reverse("admin:workflows_workflow_changelist"),
        reverse("admin:workflows_workflow_change", args=[finished_generation.workflow.pk]),
    ]

    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        _assert_clean(response.content.decode(), SECRET_KEY_FOR_COMFYDEPLOY)


def test_it_ships_no_secret_in_static_files() -> None:
    sources = [Path(d) for d in django_settings.STATICFILES_DIRS]
    files = [path for source in sources for path in source.rglob("*") if path.is_file()]

    assert files
    for path in files:
        content = path.read_bytes()
        # Front-end code never even refers to the key (it could only ever get it from a page).
        assert b"COMFY_DEPLOY_API_KEY" not in content, path
        assert b"comfydeploy.com" not in content, path
