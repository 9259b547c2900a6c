"""The hot paths run a small, fixed number of queries: starting a generation, an authentic webhook
delivery (ComfyDeploy sends one per status change of every run), and the list endpoints, whose
cost must not grow with the number of items on a page.

Counts are measured inside the test transaction, so savepoints count as queries; the bounds are
the measured numbers, so any new query on these paths is a deliberate decision."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from credits.services import credits_adjust
from generations.models import Generation, Status
from tests.conftest import make_workflow
from tests.pipeline_fixtures import API, image_outputs, queued_generation, start, webhook_post
from workflows.models import WorkflowInput

pytest_plugins = ["tests.pipeline_fixtures"]
pytestmark = [pytest.mark.usefixtures("pipeline_settings"), pytest.mark.django_db]


@pytest.fixture
def quiet(sim, settings) -> None:
    sim.configure(webhooks="none")
    settings.MAX_CONCURRENT_RUNS = 10


def test_it_starts_a_generation_in_a_fixed_number_of_queries(
    quiet, alice, alice_client, workflow, django_assert_max_num_queries
) -> None:
    credits_adjust(user=alice, amount=100, reason="test", actor=None)
    # session + user, workflow + its inputs, [savepoint, lock balance, count active, insert
    # generation, update balance, insert ledger entry, release], then one UPDATE storing the run
    # id and one INSERT of the "queued" status event.
    with django_assert_max_num_queries(13):
        response = start(alice_client, "a red fox [sim:stuck]")
    assert response.status_code == 201

    # More inputs on the workflow do not mean more queries.
    for n in range(5):
        WorkflowInput.objects.create(
            workflow=workflow, input_id=f"extra{n}", label=f"Extra {n}", position=10 + n
        )
    with django_assert_max_num_queries(13):
        assert start(alice_client, "a red fox [sim:stuck]").status_code == 201


def test_it_refuses_a_start_in_a_fixed_number_of_queries(
    quiet, alice, alice_client, workflow, django_assert_max_num_queries
) -> None:
    with django_assert_max_num_queries(4):
        assert start(alice_client, "").status_code == 400  # invalid inputs: before any lock
    credits_adjust(user=alice, amount=-5, reason="test", actor=None)
    # ... and short of credits: the charge's checks run under the lock, then roll back.
    with django_assert_max_num_queries(10):
        assert start(alice_client, "fox").status_code == 402


@pytest.mark.parametrize(
    ("status", "bound"),
    [
        # read by id; [savepoint, lock, update, insert status event, release]
        ("running", 6),
        ("success", 6),
        # ... plus the refund: [savepoint, lock balance, read charge/refund, [savepoint, update
        # balance, insert entry, release], release]
        ("failed", 14),
    ],
)
def test_it_applies_an_authentic_webhook_in_a_fixed_number_of_queries(
    status: str, bound: int, quiet, alice_client, workflow, django_assert_max_num_queries
) -> None:
    generation = queued_generation(alice_client)
    outputs = image_outputs() if status == "success" else None

    with django_assert_max_num_queries(bound):
        assert webhook_post(generation, status, outputs=outputs).status_code == 200
    # A duplicate is cheaper still, never dearer.
    with django_assert_max_num_queries(bound):
        assert webhook_post(generation, status, outputs=outputs).status_code == 200


def test_it_refuses_a_forged_webhook_without_touching_the_database(
    quiet, alice_client, workflow, django_assert_num_queries
) -> None:
    generation = queued_generation(alice_client)

    with django_assert_num_queries(0):
        response = alice_client.post(
            f"/webhooks/comfydeploy/{generation.id}/forged/",
            data="{}",
            content_type="application/json",
        )
    assert response.status_code == 404


def _fill(alice, count: int) -> None:
    workflow = make_workflow(slug=f"wf-{count}")
    for n in range(count):
        Generation.objects.create(
            user=alice,
            workflow=workflow,
            cost=1,
            status=Status.SUCCEEDED,
            inputs={"prompt": f"{n}"},
        )
        credits_adjust(user=alice, amount=1, reason=f"gift {n}", actor=None)
    # A few more workflows with inputs for /workflows.
    for n in range(count // 5):
        make_workflow(slug=f"extra-{count}-{n}")


@pytest.mark.parametrize("path", ["/generations", "/ledger", "/workflows", "/me"])
def test_it_lists_in_a_number_of_queries_independent_of_the_page_size(
    path: str, alice, alice_client, django_assert_num_queries
) -> None:
    _fill(alice, 1)
    with CaptureQueriesContext(connection) as few:
        assert alice_client.get(f"{API}{path}").status_code == 200
    _fill(alice, 19)

    with django_assert_num_queries(len(few)):
        response = alice_client.get(f"{API}{path}")

    assert response.status_code == 200
    assert len(few) <= 4
    if path in ("/generations", "/ledger"):
        assert len(response.json()["results"]) == 20
