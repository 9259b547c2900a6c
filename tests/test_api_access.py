"""bob never sees alice's generations or ledger: through the API and through the polled pages,
anyone else's generation is answered exactly like one that does not exist, and asking for it does
not even make the app ask ComfyDeploy about it."""

import uuid

import pytest

from generations.models import Generation
from tests.pipeline_fixtures import API, queued_generation

pytest_plugins = ["tests.pipeline_fixtures"]
pytestmark = [pytest.mark.usefixtures("pipeline_settings"), pytest.mark.django_db]


@pytest.fixture
def alices(sim, settings, alice_client, workflow) -> Generation:
    sim.configure(webhooks="none")
    settings.POLL_REFRESH_AFTER_SECONDS = 0  # any poll by its owner would ask upstream
    return queued_generation(alice_client, "alice's secret fox [sim:stuck]")


def _paths(generation_id: object) -> list[tuple[str, dict]]:
    return [
        (f"{API}/generations/{generation_id}", {}),
        (f"/dashboard/generations/{generation_id}/", {}),
        (f"/dashboard/generations/{generation_id}/card/", {"HTTP_HX_REQUEST": "true"}),
        (f"/dashboard/generations/{generation_id}/card/", {}),
    ]


def test_it_answers_404_to_bob_for_alices_generation(alices, sim, bob_client) -> None:
    for path, headers in _paths(alices.id):
        response = bob_client.get(path, **headers)
        assert response.status_code == 404, path
        assert b"secret fox" not in response.content

    # bob's curiosity did not make the app poll upstream on alice's behalf.
    assert sim.count_requests("GET", f"/api/run/{alices.run_id}") == 0


def test_it_answers_bob_the_same_as_for_a_generation_that_does_not_exist(
    alices, bob_client
) -> None:
    theirs = bob_client.get(f"{API}/generations/{alices.id}")
    missing = bob_client.get(f"{API}/generations/{uuid.uuid4()}")

    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()


def test_it_shows_alice_her_own_generation(alices, alice_client) -> None:
    for path, headers in _paths(alices.id):
        assert alice_client.get(path, **headers).status_code in (200, 302), path


def test_it_leaves_alices_generations_and_ledger_out_of_bobs_lists(alices, bob_client, bob) -> None:
    generations = bob_client.get(f"{API}/generations").json()
    ledger = bob_client.get(f"{API}/ledger").json()
    me = bob_client.get(f"{API}/me").json()

    assert generations["results"] == []
    assert [e["kind"] for e in ledger["results"]] == ["signup_bonus"]
    assert (me["email"], me["balance"], me["active_generations"]) == ("bob@example.com", 5, 0)
    assert b"secret fox" not in bob_client.get("/dashboard/history/").content


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "1", "00000000-0000-0000-0000-00000000000g"])
def test_it_answers_a_malformed_id_with_a_4xx(bad_id: str, alice_client) -> None:
    response = alice_client.get(f"{API}/generations/{bad_id}")

    assert response.status_code in (400, 404, 422)
    assert response.json()["error"]
