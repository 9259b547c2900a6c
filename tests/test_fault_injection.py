"""ComfyDeploy misbehaving, through the simulator: whatever goes wrong when a run is queued, the user
gets a readable failure and their credits back exactly once; a hung upstream call holds no lock and
blocks no one else; a worker killed between the charge and the queue call is refunded by the
watchdog, once.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from credits.models import CreditBalance, LedgerEntry
from generations.models import Generation, Status
from generations.services import generation_recheck, generation_start, generations_reconcile
from generations.simulator import QUEUE_PATH
from tests.conftest import make_user, make_workflow
from tests.test_production_gunicorn import subprocess_database_url
from tests.test_production_settings import ROOT, production_env

pytest_plugins = ["tests.simulator_fixtures"]

Kind = LedgerEntry.Kind
BONUS = 5
COST = 2
WAIT = 30  # deadlock guard, not a timing assertion


@pytest.fixture(autouse=True)
def _isolated(settings) -> None:
    settings.SIGNUP_BONUS_CREDITS = BONUS
    # Webhooks go nowhere unless a test serves them (port 9 refuses connections).
    settings.APP_URL = "http://127.0.0.1:9"


def _balance(user) -> int:
    return CreditBalance.objects.get(user=user).balance


def _kinds(user) -> list[str]:
    return list(LedgerEntry.objects.filter(user=user).order_by("id").values_list("kind", flat=True))


def _assert_refunded_once(generation: Generation) -> None:
    user = generation.user
    assert generation.status == Status.FAILED
    assert "refunded" in generation.error  # readable, shown to the owner
    assert _kinds(user) == [Kind.SIGNUP_BONUS, Kind.GENERATION_CHARGE, Kind.GENERATION_REFUND]
    assert _balance(user) == BONUS
    total = LedgerEntry.objects.filter(user=user).aggregate(total=Sum("amount"))["total"]
    assert total == _balance(user)


def _failure_note(generation: Generation) -> str:
    """What staff see in the status history: the upstream reason, kept out of the owner's page."""
    return " ".join(generation.events.filter(status=Status.FAILED).values_list("detail", flat=True))


def _wait_until(predicate, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Queue failures ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_refunds_when_comfydeploy_refuses_the_connection(alice, workflow, settings) -> None:
    settings.COMFY_DEPLOY_API_URL = f"http://127.0.0.1:{_closed_port()}/api"
    settings.COMFY_DEPLOY_API_KEY = "real-looking-key"

    generation = generation_start(user=alice, workflow=workflow, inputs={"prompt": "a fox"})

    _assert_refunded_once(generation)
    assert "connection refused" in _failure_note(generation)
    assert generation.run_id == ""


@pytest.mark.django_db
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_it_refunds_when_comfydeploy_answers_5xx(alice, workflow, app_simulator, status) -> None:
    app_simulator.configure(queue_status=status)

    generation = generation_start(user=alice, workflow=workflow, inputs={"prompt": "a fox"})

    _assert_refunded_once(generation)
    assert f"HTTP {status}" in _failure_note(generation)


@pytest.mark.django_db
def test_it_refunds_when_comfydeploy_does_not_answer_in_time(
    alice, workflow, app_simulator, settings
) -> None:
    settings.COMFY_DEPLOY_READ_TIMEOUT = 1
    app_simulator.configure(queue_delay=5)

    generation = generation_start(user=alice, workflow=workflow, inputs={"prompt": "a fox"})

    _assert_refunded_once(generation)
    assert "did not answer within 1 s" in _failure_note(generation)


@pytest.mark.django_db
@pytest.mark.parametrize("answer", ["invalid_json", "no_run_id"])
def test_it_refunds_when_comfydeploy_answers_200_with_garbage(
    alice, workflow, app_simulator, answer
) -> None:
    app_simulator.configure(queue_malformed=answer)

    generation = generation_start(user=alice, workflow=workflow, inputs={"prompt": "a fox"})

    _assert_refunded_once(generation)


# --- A hung upstream call blocks no one ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_completes_another_users_generation_while_one_queue_call_hangs(
    app_simulator, live_server, settings
) -> None:
    settings.APP_URL = live_server.url  # webhooks reach the app
    settings.COMFY_DEPLOY_READ_TIMEOUT = 40  # longer than the hang: the call really waits
    alice = make_user("alice@example.com")
    bob = make_user("bob@example.com")
    workflow = make_workflow()
    app_simulator.configure(queue_delay=30)
    hung: dict[str, Generation] = {}

    def alice_generates() -> None:
        try:
            hung["generation"] = generation_start(
                user=alice, workflow=workflow, inputs={"prompt": "slow fox"}
            )
        finally:
            connection.close()

    thread = threading.Thread(target=alice_generates)
    thread.start()
    try:
        # Charged and committed, and the queue POST is at ComfyDeploy, waiting.
        assert _wait_until(lambda: app_simulator.count_requests("POST", QUEUE_PATH) == 1)
        assert Generation.objects.get(user=alice).status == Status.PENDING
        app_simulator.configure(queue_delay=0)  # only alice's call hangs

        # No lock is held across the HTTP call: alice's balance row and generation are free.
        with transaction.atomic():
            CreditBalance.objects.select_for_update(nowait=True).get(user=alice)
            Generation.objects.select_for_update(nowait=True).get(user=alice)

        generation = generation_start(user=bob, workflow=workflow, inputs={"prompt": "quick owl"})
        assert generation.status == Status.QUEUED
        assert app_simulator.wait_for(
            lambda: app_simulator.run(generation.run_id).is_terminal, timeout=WAIT
        )

        def bob_done() -> bool:
            current = Generation.objects.get(pk=generation.pk)
            if current.status == Status.QUEUED and app_simulator.deliveries:
                # Same path as the browser's polling if a webhook raced the run_id being stored.
                generation_recheck(generation=current, source="poll")
            return Generation.objects.get(pk=generation.pk).status == Status.SUCCEEDED

        assert _wait_until(bob_done)
        assert thread.is_alive(), "alice's queue call should still be hanging"
        bob_generation = Generation.objects.get(pk=generation.pk)
        assert bob_generation.images
        assert _balance(bob) == BONUS - COST
        assert _kinds(bob) == [Kind.SIGNUP_BONUS, Kind.GENERATION_CHARGE]
    finally:
        app_simulator.stop()  # ends the hung call (ComfyDeploy "crashes")
        thread.join(WAIT)
    assert not thread.is_alive()
    _assert_refunded_once(Generation.objects.select_related("user").get(user=alice))


# --- A worker killed mid-flight ------------------------------------------------------------------

START_IN_ANOTHER_PROCESS = """
from accounts.models import User
from generations.services import generation_start
from workflows.models import Workflow
generation_start(
    user=User.objects.get(email="alice@example.com"),
    workflow=Workflow.objects.get(slug="text-to-image"),
    inputs={"prompt": "killed mid-flight"},
)
"""


@pytest.mark.django_db(transaction=True)
def test_it_refunds_exactly_once_when_the_worker_is_killed_between_charge_and_queue(
    simulator,
) -> None:
    alice = make_user("alice@example.com")
    make_workflow()
    simulator.configure(queue_delay=30)
    env = production_env(
        DATABASE_URL=subprocess_database_url(),
        COMFY_DEPLOY_API_URL=simulator.url,
        COMFY_DEPLOY_API_KEY=simulator.api_key,
        COMFY_DEPLOY_READ_TIMEOUT="40",
        APP_URL="http://127.0.0.1:9",
    )
    process = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", START_IN_ANOTHER_PROCESS],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        charged = _wait_until(
            lambda: (
                process.poll() is None
                and Generation.objects.filter(user=alice).exists()
                and simulator.count_requests("POST", QUEUE_PATH) == 1
            )
        )
        assert charged, (
            process.stderr.read().decode() if process.poll() is not None else "timed out"
        )
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(WAIT)
    generation = Generation.objects.get(user=alice)
    assert (generation.status, generation.run_id) == (Status.PENDING, "")
    assert _balance(alice) == BONUS - COST  # the charge was committed before the kill

    later = timezone.now() + timedelta(seconds=django_settings.RUN_STALE_AFTER_SECONDS + 1)
    first = generations_reconcile(now=later)
    second = generations_reconcile(now=later)

    assert first.failed_unqueued == 1
    assert second.failed_unqueued == 0
    _assert_refunded_once(Generation.objects.select_related("user").get(pk=generation.pk))
