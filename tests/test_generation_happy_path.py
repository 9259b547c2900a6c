"""A paid generation completes end to end: charged once, queued at ComfyDeploy (the simulator, over
real HTTP), then finished either by its webhooks or, where webhooks cannot reach the app (a
laptop), by polling alone. The user ends up with the image and no refund."""

import httpx
import pytest

from generations.models import Generation, GenerationEvent, Status
from tests.pipeline_fixtures import (
    API,
    assert_ledger_clean,
    balance,
    charges,
    refunds,
    start,
    wait_until,
)

pytest_plugins = ["tests.pipeline_fixtures"]
pytestmark = pytest.mark.usefixtures("pipeline_settings")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_succeeded_with_image(generation: Generation, sim, alice) -> None:
    assert generation.status == Status.SUCCEEDED
    assert generation.progress == 1.0
    assert generation.error == ""
    assert generation.finished_at is not None
    (image,) = generation.images
    assert image["url"].startswith(sim.origin)
    picture = httpx.get(image["url"], timeout=5)
    assert picture.status_code == 200
    assert picture.content.startswith(PNG_MAGIC)
    # Charged once, never refunded.
    assert (charges(generation), refunds(generation)) == (1, 0)
    assert balance(alice) == 5 - 2
    assert_ledger_clean(alice)


@pytest.mark.django_db(transaction=True)
def test_it_completes_a_generation_through_webhooks(
    live_app, sim, alice, alice_client, workflow
) -> None:
    response = start(alice_client, "a red fox in snow")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued"
    assert body["cost"] == 2
    assert body["inputs"] == {"prompt": "a red fox in snow"}
    generation = Generation.objects.get(pk=body["id"])
    assert generation.run_id in sim.runs
    assert balance(alice) == 3

    assert wait_until(lambda: Generation.objects.get(pk=generation.pk).is_terminal)
    generation.refresh_from_db()
    _assert_succeeded_with_image(generation, sim, alice)
    # Webhooks did the work: the success was heard through one, and every delivery was accepted.
    assert generation.events.filter(
        source=GenerationEvent.Source.WEBHOOK, status=Status.SUCCEEDED
    ).exists()
    assert wait_until(lambda: any(d.body["status"] == "success" for d in sim.deliveries))
    # Each status change was delivered and finally accepted. (The first one may beat the queue
    # call's answer: it is refused with a 409 and its retry, a GET, re-fetches the run.)
    last_answer = {d.body["status"]: d.response_status for d in sim.deliveries}
    assert last_answer == {"queued": 200, "started": 200, "running": 200, "success": 200}
    assert all(
        d.response_status == 200
        or (d.response_status == 409 and d.body["status"] in ("queued", "started"))
        for d in sim.deliveries
    )

    # The API shows what the user needs.
    shown = alice_client.get(f"{API}/generations/{generation.id}").json()
    assert shown["status"] == "succeeded"
    assert shown["outputs"] == [{"url": generation.images[0]["url"], "type": "image"}]


@pytest.mark.django_db
def test_it_completes_a_generation_by_polling_alone(
    sim, settings, alice, alice_client, workflow
) -> None:
    sim.configure(webhooks="none")
    settings.POLL_REFRESH_AFTER_SECONDS = 0
    response = start(alice_client, "a lighthouse at dusk")
    assert response.status_code == 201, response.content
    generation_id = response.json()["id"]
    seen: list[str] = []

    def polled_to_the_end() -> bool:
        shown = alice_client.get(f"{API}/generations/{generation_id}")
        assert shown.status_code == 200
        seen.append(shown.json()["status"])
        return shown.json()["status"] not in ("pending", "queued", "running")

    assert wait_until(polled_to_the_end, interval=0.03)

    assert seen[-1] == "succeeded"
    # The statuses only ever moved forward.
    order = ["queued", "running", "succeeded"]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)
    generation = Generation.objects.get(pk=generation_id)
    _assert_succeeded_with_image(generation, sim, alice)
    assert not sim.deliveries
    assert generation.events.filter(
        source=GenerationEvent.Source.POLL, status=Status.SUCCEEDED
    ).exists()
    assert (
        alice_client.get(f"{API}/generations/{generation_id}").json()["outputs"][0]["type"]
        == "image"
    )


@pytest.mark.django_db
def test_it_does_not_ask_upstream_again_while_the_run_was_heard_from_recently(
    sim, settings, alice, alice_client, workflow
) -> None:
    sim.configure(webhooks="none")
    settings.POLL_REFRESH_AFTER_SECONDS = 3600
    generation_id = start(alice_client, "a quiet lake [sim:stuck]").json()["id"]
    run_id = Generation.objects.get(pk=generation_id).run_id

    for _ in range(5):
        assert alice_client.get(f"{API}/generations/{generation_id}").json()["status"] == "queued"

    assert sim.count_requests("GET", f"/api/run/{run_id}") == 0
