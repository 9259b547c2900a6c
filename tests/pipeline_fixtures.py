"""Fixtures and helpers for the generation pipeline tests.

The app talks to an in-process ComfyDeploy simulator over real HTTP (no patching of our own code).
Webhooks only reach the app when a test asks for ``live_app`` (the app on pytest-django's live
server); otherwise ``APP_URL`` points at a closed port, so every delivery is lost, as it is on a
laptop that ComfyDeploy cannot reach.

A test module loads the fixtures with ``pytest_plugins = ["tests.pipeline_fixtures"]`` and
``pytestmark = pytest.mark.usefixtures("pipeline_settings")``, and imports the helpers.
"""

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Sum
from django.http import HttpResponse
from django.test import Client

from credits.models import CreditBalance, LedgerEntry
from generations.models import Generation
from generations.services import webhook_token
from generations.simulator import Simulator

API = "/api/v1"
# A deadline for things that normally take milliseconds (a guard against hangs, not a timing test).
WAIT = 15.0
# Simulator lifecycle steps: fast enough for a quick suite, slow enough to stay realistic.
STEP_SECONDS = 0.02


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def pipeline_settings(settings) -> None:
    """Fast password hashing for the personas, and English messages to assert on (the default
    language is Spanish; stored errors are written in the language active at the time)."""
    settings.LANGUAGE_CODE = "en"


@pytest.fixture
def sim(settings) -> Iterator[Simulator]:
    """A fresh simulator the app uses (COMFY_DEPLOY_API_KEY empty → SIMULATOR_URL)."""
    simulator = Simulator(step_seconds=STEP_SECONDS).start()
    simulator.configure(webhook_retry_delay=0.05, webhook_timeout=5.0)
    settings.COMFY_DEPLOY_API_KEY = ""
    settings.SIMULATOR_URL = simulator.url
    settings.COMFY_DEPLOY_CONNECT_TIMEOUT = 2
    settings.COMFY_DEPLOY_READ_TIMEOUT = 5
    # Nobody listens here: webhooks are lost unless the test also asks for ``live_app``.
    settings.APP_URL = closed_port_url()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def live_app(live_server, settings, sim) -> str:
    """The app on a live server that the simulator's webhooks reach (needs transactional_db)."""
    settings.APP_URL = live_server.url
    return live_server.url


def login(user) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


def post_json(client: Client, path: str, data: Any, **extra: Any) -> HttpResponse:
    body = data if isinstance(data, bytes | str) else json.dumps(data)
    return client.post(path, data=body, content_type="application/json", **extra)


def start(
    client: Client,
    prompt: str = "a red fox in snow",
    workflow: str = "text-to-image",
    **inputs: Any,
) -> HttpResponse:
    """``POST /api/v1/generations`` as the API's users do."""
    return post_json(
        client, f"{API}/generations", {"workflow": workflow, "inputs": {"prompt": prompt, **inputs}}
    )


def webhook_path(generation: Generation, token: str | None = None) -> str:
    return f"/webhooks/comfydeploy/{generation.id}/{token or webhook_token(generation.id)}/"


def webhook_post(
    generation: Generation,
    status: str,
    *,
    run_id: str | None = None,
    outputs: list | None = None,
    client: Client | None = None,
    **body: Any,
) -> HttpResponse:
    """Deliver one ComfyDeploy webhook (as the upstream sends it) to the app's webhook URL."""
    payload = {
        "event_type": "run.updated",
        "status": status,
        "live_status": None,
        "progress": 1.0 if status == "success" else 0.5,
        "run_id": generation.run_id if run_id is None else run_id,
        "outputs": outputs or [],
        **body,
    }
    return post_json(client or Client(), webhook_path(generation), payload)


def image_outputs(url: str = "https://bucket.example/out/1.png") -> list[dict[str, Any]]:
    return [{"output_id": "output_images", "data": {"images": [{"url": url, "type": "output"}]}}]


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until truthy (True) or the deadline passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def run_concurrently(targets: list[Callable[[], Any]], *, max_connections: int = 25) -> list[Any]:
    """Run each target in its own thread, released together by a barrier; returns their results
    (or the exception each raised). At most ``max_connections`` hold a DB connection at once: the
    shared PostgreSQL allows 100 in total."""
    barrier = threading.Barrier(len(targets))
    gate = threading.BoundedSemaphore(max_connections)
    results: list[Any] = [None] * len(targets)

    def runner(index: int, target: Callable[[], Any]) -> None:
        try:
            barrier.wait(WAIT)
            with gate:
                try:
                    results[index] = target()
                finally:
                    connection.close()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=runner, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 4)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck (deadlock?)"
    return results


def balance(user) -> int:
    return CreditBalance.objects.get(user=user).balance


def charges(generation: Generation | str) -> int:
    return LedgerEntry.objects.filter(
        generation=generation, kind=LedgerEntry.Kind.GENERATION_CHARGE
    ).count()


def refunds(generation: Generation | str) -> int:
    return LedgerEntry.objects.filter(
        generation=generation, kind=LedgerEntry.Kind.GENERATION_REFUND
    ).count()


def assert_ledger_clean(*users) -> None:
    """``check_ledger`` passes, and each given user's balance is the sum of their entries."""
    errors = io.StringIO()
    try:
        call_command("check_ledger", stdout=io.StringIO(), stderr=errors)
    except SystemExit:
        pytest.fail(f"check_ledger failed:\n{errors.getvalue()}")
    for user in users:
        total = LedgerEntry.objects.filter(user=user).aggregate(total=Sum("amount"))["total"] or 0
        assert balance(user) == total >= 0, f"{user}: balance {balance(user)} != ledger sum {total}"


def queued_generation(client: Client, prompt: str = "a quiet lake [sim:stuck]") -> Generation:
    """Start a generation through the API; with ``[sim:stuck]`` it never ends upstream."""
    response = start(client, prompt)
    assert response.status_code == 201, response.content
    return Generation.objects.get(pk=response.json()["id"])


def state(generation: Generation) -> tuple:
    """Everything a webhook could change about a generation and its owner's credits."""
    fresh = Generation.objects.get(pk=generation.pk)
    return (
        fresh.status,
        fresh.progress,
        fresh.live_status,
        fresh.outputs,
        fresh.error,
        fresh.run_id,
        fresh.last_synced_at,
        fresh.updated_at,
        fresh.events.count(),
        LedgerEntry.objects.filter(user_id=fresh.user_id).count(),
        balance(fresh.user),
    )
