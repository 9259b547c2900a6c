"""History (own generations, newest first, paginated gallery) and the generation detail page.
Bob never sees Alice's runs; the gallery's query count does not grow with the page size."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generations import views
from generations.models import Generation, GenerationEvent, Status
from tests.conftest import make_workflow

pytestmark = pytest.mark.django_db

HISTORY = "/dashboard/history/"
IMAGE = "https://bucket.example/out/{n}.png"


def _generation(user, workflow, n: int = 0, **fields) -> Generation:
    values = {
        "status": Status.SUCCEEDED,
        "inputs": {"prompt": f"prompt number {n}"},
        "outputs": [{"url": IMAGE.format(n=n), "type": "image", "output_id": "output_images"}],
    }
    values.update(fields)
    generation = Generation.objects.create(
        user=user, workflow=workflow, cost=workflow.cost, **values
    )
    # Distinct, increasing creation times (auto_now_add ignores a passed value).
    Generation.objects.filter(pk=generation.pk).update(
        created_at=timezone.now() + timedelta(seconds=n)
    )
    return generation


def test_it_shows_an_empty_state_to_a_new_user(alice_client) -> None:
    response = alice_client.get(HISTORY)

    assert response.status_code == 200
    assert 'class="empty-state"' in response.text
    assert 'href="/dashboard/"' in response.text


def test_it_lists_my_generations_newest_first_with_what_matters(
    alice, alice_client, workflow
) -> None:
    older = _generation(alice, workflow, 1)
    newer = _generation(alice, workflow, 2, status=Status.FAILED, outputs=[])

    html = alice_client.get(HISTORY).text

    assert html.index(f"/dashboard/generations/{newer.id}/") < html.index(
        f"/dashboard/generations/{older.id}/"
    )
    assert f'src="{IMAGE.format(n=1)}"' in html  # thumbnail
    assert "prompt number 1" in html and "prompt number 2" in html
    assert "Text to image" in html
    assert 'class="badge badge-failed"' in html and 'class="badge badge-succeeded"' in html
    assert "2 créditos" in html
    assert "reembolsado" in html
    assert "<time datetime=" in html


def test_it_never_shows_bob_alices_generations(alice, bob_client, workflow) -> None:
    generation = _generation(alice, workflow, 1, inputs={"prompt": "alice's private idea"})

    history = bob_client.get(HISTORY).text
    detail = bob_client.get(f"/dashboard/generations/{generation.id}/")
    card = bob_client.get(f"/dashboard/generations/{generation.id}/card/", HTTP_HX_REQUEST="true")

    assert "private idea" not in history
    assert str(generation.id) not in history
    assert detail.status_code == 404
    assert card.status_code == 404


def test_it_paginates_and_answers_htmx_with_the_gallery_only(alice, alice_client, workflow) -> None:
    for n in range(views.HISTORY_PAGE_SIZE + 3):
        _generation(alice, workflow, n)

    first = alice_client.get(HISTORY).text
    second = alice_client.get(HISTORY, {"page": 2}, HTTP_HX_REQUEST="true")
    beyond = alice_client.get(HISTORY, {"page": 99})

    assert first.count('class="gallery-item"') == views.HISTORY_PAGE_SIZE
    assert 'href="?page=2"' in first
    assert second.status_code == 200
    assert "<html" not in second.text
    assert second.text.lstrip().startswith('<div id="gallery">')
    assert second.text.count('class="gallery-item"') == 3
    assert "prompt number 0" in second.text  # the oldest are on the last page
    assert beyond.status_code == 200  # past the end: the last page, not an error


def test_it_lists_a_page_with_a_fixed_number_of_queries(
    alice, alice_client, workflow, monkeypatch
) -> None:
    """A gallery page of 25 items costs the same queries as a page of 5 (no N+1)."""
    other = make_workflow(slug="portrait")
    for n in range(25):
        _generation(alice, workflow if n % 2 else other, n)
    counts = {}
    for size in (5, 25):
        monkeypatch.setattr(views, "HISTORY_PAGE_SIZE", size)
        with CaptureQueriesContext(connection) as queries:
            response = alice_client.get(HISTORY)
        assert response.text.count('class="gallery-item"') == size
        counts[size] = len(queries)

    assert counts[5] == counts[25]
    # session + user, balance (top bar), count, page
    assert counts[25] <= 5


def test_it_shows_the_detail_of_my_generation(alice, alice_client, workflow) -> None:
    generation = _generation(alice, workflow, 7, inputs={"prompt": "a lighthouse <b>at dusk</b>"})
    Generation.objects.filter(pk=generation.pk).update(
        run_id="run-123",
        queued_at=timezone.now(),
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )
    GenerationEvent.objects.create(generation=generation, status=Status.RUNNING, source="webhook")
    GenerationEvent.objects.create(generation=generation, status=Status.SUCCEEDED, source="webhook")

    response = alice_client.get(f"/dashboard/generations/{generation.id}/")

    assert response.status_code == 200
    html = response.text
    assert f'<img src="{IMAGE.format(n=7)}"' in html
    assert f'href="{IMAGE.format(n=7)}" download' in html
    assert "a lighthouse &lt;b&gt;at dusk&lt;/b&gt;" in html  # inputs, escaped
    assert "<dt>Prompt</dt>" in html  # labelled with the workflow's label
    assert "run-123" in html
    assert html.count('class="timeline"') == 1 and "En curso" in html and "Completada" in html
    run_again = f'href="/dashboard/?workflow=text-to-image&amp;from={generation.id}"'
    assert run_again in html


def test_it_hides_run_again_when_the_workflow_is_retired(alice, alice_client, workflow) -> None:
    generation = _generation(alice, workflow, 1)
    workflow.is_active = False
    workflow.save()

    html = alice_client.get(f"/dashboard/generations/{generation.id}/").text

    assert "from=" not in html


def test_it_shows_a_refunded_run_and_a_running_one_on_the_detail_page(
    alice, alice_client, workflow
) -> None:
    failed = _generation(
        alice, workflow, 1, status=Status.FAILED, outputs=[], error="It broke upstream."
    )
    running = _generation(alice, workflow, 2, status=Status.RUNNING, outputs=[], progress=0.4)

    failed_html = alice_client.get(f"/dashboard/generations/{failed.id}/").text
    running_html = alice_client.get(f"/dashboard/generations/{running.id}/").text

    assert "sus 2 créditos fueron reembolsados" in failed_html
    assert "It broke upstream." in failed_html
    assert re.search(r'<progress max="100" value="40"', running_html)
    assert 'hx-trigger="every 3s"' in running_html
