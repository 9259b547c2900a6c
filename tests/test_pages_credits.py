"""The credits page: the balance, the full paginated ledger (with links to the runs), and the packages
on sale with prices written for the reader's language."""

import pytest
from django.utils import translation

from credits import views
from credits.models import CreditPackage, LedgerEntry
from credits.services import generation_charge
from generations.models import Generation, Status
from tests.conftest import set_balance_for_test

pytestmark = pytest.mark.django_db

CREDITS = "/dashboard/credits/"


@pytest.fixture
def packages(db) -> None:
    CreditPackage.objects.create(name="Básico", credits=500, price="99.00", position=0)
    CreditPackage.objects.create(name="Pro", credits=5000, price="1699.50", position=1)
    CreditPackage.objects.create(name="Retired", credits=1, price="1.00", is_active=False)


def test_it_shows_the_balance_and_every_ledger_column(alice, alice_client, workflow) -> None:
    generation = Generation.objects.create(
        user=alice, workflow=workflow, cost=2, status=Status.SUCCEEDED
    )
    with translation.override("es"):  # the reason is written in the language of the moment
        generation_charge(generation=generation)

    response = alice_client.get(CREDITS)

    assert response.status_code == 200
    html = response.text
    assert '<p class="balance-figure" id="balance-figure">3 ' in html
    rows = html.split("<tbody>")[1].split("</tbody>")[0]
    assert rows.index('data-kind="generation_charge"') < rows.index('data-kind="signup_bonus"')
    assert "Cargo por generación" in rows and "Bono de bienvenida" in rows
    assert "−2" in rows and "+5" in rows
    assert f'href="/dashboard/generations/{generation.id}/"' in rows
    assert "Generación con Text to image" in rows
    assert "<time datetime=" in rows


def test_it_paginates_the_ledger_and_answers_htmx_with_the_table_only(alice, alice_client) -> None:
    for amount in range(1, views.LEDGER_PAGE_SIZE + 3):
        set_balance_for_test(alice, 5 + amount)

    first = alice_client.get(CREDITS).text
    second = alice_client.get(CREDITS, {"page": 2}, HTTP_HX_REQUEST="true")

    assert first.count("<tr data-kind=") == views.LEDGER_PAGE_SIZE
    assert 'href="?page=2"' in first
    assert second.text.lstrip().startswith('<div id="ledger">')
    assert "<html" not in second.text
    total = LedgerEntry.objects.filter(user=alice).count()
    assert second.text.count("<tr data-kind=") == total - views.LEDGER_PAGE_SIZE


def test_it_never_shows_bob_alices_ledger(alice, bob_client) -> None:
    set_balance_for_test(alice, 42)

    html = bob_client.get(CREDITS).text

    assert "test set-up" not in html
    assert html.count("<tr data-kind=") == 1  # bob's own signup bonus


def test_it_lists_active_packages_with_prices_in_spanish(alice_client, packages) -> None:
    html = alice_client.get(CREDITS).text

    assert "Básico" in html and "Pro" in html and "Retired" not in html
    assert "99,00\N{NO-BREAK SPACE}US$" in html
    assert "1\N{NO-BREAK SPACE}699,50\N{NO-BREAK SPACE}US$" in html
    # The payments engineer's buy button, once per package.
    assert html.count('class="package-buy') >= 2


def test_it_lists_prices_in_english_for_english_readers(alice_client, packages) -> None:
    html = alice_client.get(CREDITS, HTTP_ACCEPT_LANGUAGE="en").text

    assert "US$99.00" in html
    assert "US$1,699.50" in html
