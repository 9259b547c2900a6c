"""The dashboard: pick a workflow, fill its form, generate, and watch the live card, with htmx and
without JavaScript. The ComfyDeploy side is the in-process simulator over real HTTP; webhooks cannot
reach the test client, so the card's polling is what finishes each run here (as on a laptop)."""

import re

import pytest
from django.test import Client

from credits.models import LedgerEntry
from generations.models import Generation, Status
from tests.conftest import make_workflow, set_balance_for_test
from tests.pipeline_fixtures import balance, wait_until

pytest_plugins = ["tests.pipeline_fixtures"]
pytestmark = [pytest.mark.django_db]

DASHBOARD = "/dashboard/"
GENERATE = "/dashboard/workflows/text-to-image/generate/"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def polling(settings) -> None:
    """Every poll asks upstream (the default waits POLL_REFRESH_AFTER_SECONDS between asks)."""
    settings.POLL_REFRESH_AFTER_SECONDS = 0


def _card_url(generation: Generation) -> str:
    return f"/dashboard/generations/{generation.id}/card/"


def _poll_until_terminal(client: Client, generation: Generation):
    """Poll the card like htmx does until it renders without its polling trigger."""
    responses = []

    def terminal() -> bool:
        response = client.get(_card_url(generation), **HTMX)
        assert response.status_code == 200
        responses.append(response)
        return 'hx-trigger="every 3s"' not in response.text

    assert wait_until(terminal, interval=0.05)
    return responses[-1]


def _active_generation(user, workflow, status: str = Status.QUEUED) -> Generation:
    return Generation.objects.create(
        user=user, workflow=workflow, cost=workflow.cost, status=status
    )


def test_it_shows_the_workflow_cards_and_the_first_workflows_form(alice_client, workflow) -> None:
    make_workflow(slug="portrait", cost=3)

    response = alice_client.get(DASHBOARD)

    assert response.status_code == 200
    html = response.text
    assert "<html" in html
    assert html.count('class="workflow-card"') == 2
    assert "3 créditos" in html and "2 créditos" in html
    # The first workflow is selected: its form is ready, labelled and not blocked.
    assert 'aria-current="true"' in html
    assert '<label for="id_prompt">' in html
    assert 'name="prompt"' in html
    assert 'action="/dashboard/workflows/text-to-image/generate/"' in html
    assert not re.search(r'<button[^>]*type="submit"[^>]*disabled', html)


def test_it_answers_htmx_with_the_picker_only(alice_client, workflow) -> None:
    make_workflow(slug="portrait", cost=3)

    response = alice_client.get(DASHBOARD, {"workflow": "portrait"}, **HTMX)

    assert response.status_code == 200
    assert "<html" not in response.text
    assert response.text.lstrip().startswith('<div id="workflow-picker"')
    assert 'action="/dashboard/workflows/portrait/generate/"' in response.text
    assert "HX-Request" in response["Vary"]


def test_it_works_as_a_plain_link_without_javascript(alice_client, workflow) -> None:
    make_workflow(slug="portrait", cost=3)

    response = alice_client.get(DASHBOARD, {"workflow": "portrait"})

    assert "<html" in response.text
    assert 'action="/dashboard/workflows/portrait/generate/"' in response.text


@pytest.mark.parametrize("slug", ["nope", "retired"])
def test_it_404s_for_an_unknown_or_inactive_workflow(alice_client, workflow, slug) -> None:
    retired = make_workflow(slug="retired")
    retired.is_active = False
    retired.save()

    assert alice_client.get(DASHBOARD, {"workflow": slug}).status_code == 404
    assert (
        alice_client.post(f"/dashboard/workflows/{slug}/generate/", {"prompt": "x"}).status_code
        == 404
    )


def test_it_explains_and_disables_generate_when_credits_are_short(
    alice, alice_client, workflow
) -> None:
    set_balance_for_test(alice, 1)

    html = alice_client.get(DASHBOARD).text

    assert re.search(r'<button[^>]*type="submit"[^>]*disabled', html)
    assert 'id="generate-blocked"' in html
    assert "cuesta 2 créditos y tu saldo es 1" in html
    assert 'href="/dashboard/credits/"' in html


def test_it_explains_and_disables_generate_at_the_concurrency_cap(
    alice, alice_client, workflow, settings
) -> None:
    settings.MAX_CONCURRENT_RUNS = 2
    _active_generation(alice, workflow, Status.QUEUED)
    _active_generation(alice, workflow, Status.RUNNING)

    html = alice_client.get(DASHBOARD).text

    assert re.search(r'<button[^>]*type="submit"[^>]*disabled', html)
    assert 'id="generate-blocked"' in html
    assert "Ya tienes 2 generaciones en curso" in html
    # The active runs are listed, polling.
    assert html.count('hx-trigger="every 3s"') == 2


def test_it_refreshes_the_generate_button_for_htmx_only(alice_client, workflow) -> None:
    url = "/dashboard/workflows/text-to-image/actions/"

    partial = alice_client.get(url, **HTMX)
    plain = alice_client.get(url)

    assert partial.status_code == 200
    assert partial.text.lstrip().startswith('<div id="generate-actions"')
    assert plain.status_code == 302
    assert plain["Location"] == "/dashboard/?workflow=text-to-image"


def test_it_prefills_the_form_from_one_of_my_earlier_runs_only(
    alice, bob, alice_client, workflow
) -> None:
    mine = Generation.objects.create(
        user=alice,
        workflow=workflow,
        cost=2,
        status=Status.SUCCEEDED,
        inputs={"prompt": "my lighthouse"},
    )
    theirs = Generation.objects.create(
        user=bob,
        workflow=workflow,
        cost=2,
        status=Status.SUCCEEDED,
        inputs={"prompt": "bob's secret"},
    )

    again = alice_client.get(DASHBOARD, {"workflow": "text-to-image", "from": str(mine.id)}).text
    foreign = alice_client.get(
        DASHBOARD, {"workflow": "text-to-image", "from": str(theirs.id)}
    ).text
    garbage = alice_client.get(DASHBOARD, {"workflow": "text-to-image", "from": "not-a-uuid"})

    assert re.search(r">\s*my lighthouse</textarea>", again)
    assert "bob&#x27;s secret" not in foreign and "bob's secret" not in foreign
    assert garbage.status_code == 200


def test_it_starts_a_generation_with_htmx_and_answers_the_polling_card(
    sim, alice, alice_client, workflow
) -> None:
    response = alice_client.post(GENERATE, {"prompt": "a red fox in snow"}, **HTMX)

    assert response.status_code == 201, response.text
    generation = Generation.objects.get(user=alice)
    assert generation.status == Status.QUEUED
    assert balance(alice) == 3
    html = response.text
    assert f'id="generation-{generation.id}"' in html
    assert 'data-status="queued"' in html
    assert f'hx-get="{_card_url(generation)}"' in html
    assert 'hx-trigger="every 3s"' in html
    assert "<progress" in html
    # The top bar's balance is swapped out of band, and the Generate button refreshes itself.
    assert re.search(r'<a id="balance"[^>]*hx-swap-oob="true"', html)
    assert 'data-balance="3"' in html
    assert response["HX-Trigger"] == "credits-changed"


def test_it_starts_a_generation_without_javascript(sim, alice, alice_client, workflow) -> None:
    response = alice_client.post(GENERATE, {"prompt": "a red fox in snow"})

    assert response.status_code == 302
    assert response["Location"] == "/dashboard/?workflow=text-to-image"
    generation = Generation.objects.get(user=alice)
    page = alice_client.get(response["Location"]).text
    assert f'id="generation-{generation.id}"' in page
    assert 'data-balance="3"' in page
    assert 'class="alert alert-success"' in page


@pytest.mark.parametrize("htmx", [True, False])
def test_it_refuses_invalid_inputs_with_400_and_moves_nothing(
    sim, alice, alice_client, workflow, htmx
) -> None:
    headers = HTMX if htmx else {}

    response = alice_client.post(GENERATE, {"prompt": ""}, **headers)

    assert response.status_code == 400
    assert 'id="generate-error"' in response.text
    assert 'aria-invalid="true"' in response.text
    assert "Este campo es obligatorio." in response.text
    assert Generation.objects.count() == 0
    assert balance(alice) == 5
    assert sim.runs == {}
    if htmx:
        assert "<html" not in response.text
        assert response["HX-Retarget"] == "#workflow-panel"
        assert response["HX-Reswap"] == "outerHTML"
    else:
        assert "<html" in response.text


def test_it_refuses_a_start_it_cannot_pay_for_with_402(sim, alice, alice_client, workflow) -> None:
    set_balance_for_test(alice, 1)

    response = alice_client.post(GENERATE, {"prompt": "a red fox"}, **HTMX)

    assert response.status_code == 402
    assert "cuesta 2 créditos y tu saldo es 1" in response.text
    # What the user typed is kept so nothing is lost.
    assert re.search(r">\s*a red fox</textarea>", response.text)
    assert Generation.objects.count() == 0
    assert balance(alice) == 1
    assert sim.runs == {}


def test_it_refuses_a_start_past_the_cap_with_429(
    sim, alice, alice_client, workflow, settings
) -> None:
    settings.MAX_CONCURRENT_RUNS = 2
    _active_generation(alice, workflow)
    _active_generation(alice, workflow)

    response = alice_client.post(GENERATE, {"prompt": "one more"}, **HTMX)

    assert response.status_code == 429
    assert "Ya tienes 2 generaciones en curso" in response.text
    assert Generation.objects.count() == 2
    assert balance(alice) == 5
    assert sim.runs == {}


def test_it_polls_the_card_until_the_image_is_ready_then_stops(
    sim, polling, alice, alice_client, workflow
) -> None:
    alice_client.post(GENERATE, {"prompt": "a red fox in snow"}, **HTMX)
    generation = Generation.objects.get(user=alice)

    final = _poll_until_terminal(alice_client, generation)

    generation.refresh_from_db()
    assert generation.status == Status.SUCCEEDED
    html = final.text
    assert 'data-status="succeeded"' in html
    assert "hx-get" not in html.split("</article>")[0]
    (image,) = generation.images
    assert f'<img src="{image["url"]}"' in html
    assert f'href="{image["url"]}" download' in html
    assert final["HX-Trigger"] == "credits-changed"
    assert 'data-balance="3"' in html


def test_it_shows_that_a_failed_run_was_refunded(
    sim, polling, alice, alice_client, workflow
) -> None:
    alice_client.post(GENERATE, {"prompt": "doomed [sim:fail]"}, **HTMX)
    generation = Generation.objects.get(user=alice)

    final = _poll_until_terminal(alice_client, generation)

    assert 'data-status="failed"' in final.text
    assert "sus 2 créditos fueron reembolsados" in final.text
    assert 'data-balance="5"' in final.text
    assert balance(alice) == 5
    assert LedgerEntry.objects.filter(generation=generation, kind="generation_refund").count() == 1


def test_it_shows_the_refund_when_comfydeploy_refuses_the_run(
    sim, alice, alice_client, workflow
) -> None:
    sim.configure(queue_status=500)

    response = alice_client.post(GENERATE, {"prompt": "a red fox"}, **HTMX)

    assert response.status_code == 201
    assert 'data-status="failed"' in response.text
    assert "reembolsados" in response.text
    assert 'hx-trigger="every 3s"' not in response.text
    assert 'data-balance="5"' in response.text
    assert balance(alice) == 5


def test_it_shows_prompts_as_text(sim, alice, alice_client, workflow) -> None:
    prompt = '<script>alert("x")</script><img src=x onerror=alert(1)>'

    card = alice_client.post(GENERATE, {"prompt": prompt}, **HTMX).text
    page = alice_client.get(DASHBOARD).text

    for html in (card, page):
        assert "<script>alert" not in html
        assert "<img src=x" not in html
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_it_sends_a_plain_card_request_to_the_detail_page(alice, alice_client, workflow) -> None:
    generation = _active_generation(alice, workflow)

    response = alice_client.get(_card_url(generation))

    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/generations/{generation.id}/"
