"""Who may see which page: anonymous visitors are sent to log in (and see the landing page),
signed-in users skip the landing page, and every page renders whole for a plain request."""

import uuid

import pytest
from django.test import Client

from generations.models import Generation, Status

pytestmark = pytest.mark.django_db

SOME_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
PRIVATE_GETS = [
    "/dashboard/",
    "/dashboard/history/",
    "/dashboard/credits/",
    f"/dashboard/generations/{SOME_ID}/",
    f"/dashboard/generations/{SOME_ID}/card/",
    "/dashboard/workflows/text-to-image/actions/",
]


@pytest.mark.parametrize("url", PRIVATE_GETS)
def test_it_sends_anonymous_visitors_to_log_in(client: Client, url: str) -> None:
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"


def test_it_sends_an_anonymous_generate_to_log_in_and_moves_nothing(
    client: Client, workflow
) -> None:
    response = client.post("/dashboard/workflows/text-to-image/generate/", {"prompt": "x"})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert Generation.objects.count() == 0


def test_it_shows_the_landing_page_to_visitors_only(client: Client, alice_client: Client) -> None:
    visitor = client.get("/")
    member = alice_client.get("/")

    assert visitor.status_code == 200
    assert 'href="/accounts/signup/"' in visitor.text
    assert 'href="/accounts/login/"' in visitor.text
    assert "5 créditos" in visitor.text  # the signup bonus is announced
    assert member.status_code == 302
    assert member["Location"] == "/dashboard/"


@pytest.mark.parametrize(
    "url", ["/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"]
)
def test_it_renders_the_account_pages_in_the_product_design(client: Client, url: str) -> None:
    html = client.get(url).text

    assert '<link rel="stylesheet" href="/static/css/app.css">' in html
    assert 'class="card auth-card"' in html
    assert "<label for=" in html  # fields are labelled, not placeholder-only


def test_it_explains_a_failed_login_clearly(client: Client, alice) -> None:
    response = client.post("/accounts/login/", {"login": "alice@example.com", "password": "wrong"})

    assert response.status_code == 200
    assert 'class="alert alert-error" role="alert"' in response.text
    assert "no son correctas" in response.text


def test_it_explains_signup_mistakes_next_to_the_fields(client: Client) -> None:
    response = client.post(
        "/accounts/signup/", {"email": "nope", "password1": "short", "password2": "other"}
    )

    assert response.status_code == 200
    assert 'aria-invalid="true"' in response.text
    assert 'class="field-errors" id="id_email_errors"' in response.text
    assert "Introduzca una dirección de correo electrónico válida." in response.text


@pytest.mark.parametrize(
    "url", ["/accounts/email/", "/accounts/password/change/", "/accounts/logout/"]
)
def test_it_renders_the_account_management_pages(alice_client: Client, url: str) -> None:
    html = alice_client.get(url).text

    assert 'class="card auth-card"' in html
    assert 'id="balance"' in html


def test_it_keeps_the_balance_in_the_top_bar_on_every_page(
    alice_client: Client, alice, workflow
) -> None:
    generation = Generation.objects.create(
        user=alice, workflow=workflow, cost=2, status=Status.SUCCEEDED
    )
    for url in [
        "/dashboard/",
        "/dashboard/history/",
        "/dashboard/credits/",
        f"/dashboard/generations/{generation.id}/",
    ]:
        html = alice_client.get(url).text
        assert '<a id="balance" class="balance" href="/dashboard/credits/"' in html, url
        assert 'data-balance="5"' in html, url
        assert "hx-swap-oob" not in html.split('id="balance"')[1].split(">")[0], url
