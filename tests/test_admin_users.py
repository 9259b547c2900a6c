"""The user list and user page: balance and active runs at a glance (no query per row), search and
filters, the recent ledger and runs read-only, and accounts created and edited by email."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from credits.models import LedgerEntry
from credits.services import generation_charge
from generations.models import Generation
from tests.conftest import make_user, set_balance_for_test

pytest_plugins = ["tests.admin_fixtures"]
pytestmark = [pytest.mark.django_db]
CHANGELIST = "admin:accounts_user_changelist"


def _running(user, workflow) -> Generation:
    generation = Generation.objects.create(
        user=user,
        workflow=workflow,
        cost=workflow.cost,
        inputs={"prompt": "a fox"},
        status="running",
    )
    generation_charge(generation=generation)
    return generation


def test_it_lists_users_with_balance_active_runs_and_dates(
    staff_client, alice, bob, workflow
) -> None:
    set_balance_for_test(alice, 9)
    _running(alice, workflow)

    page = staff_client.get(reverse(CHANGELIST))

    assert page.status_code == 200
    rows = {u.email: u for u in page.context["cl"].result_list}
    assert (
        rows["alice@example.com"].balance_value,
        rows["alice@example.com"].active_runs_value,
    ) == (7, 1)
    assert (rows["bob@example.com"].balance_value, rows["bob@example.com"].active_runs_value) == (
        5,
        0,
    )
    for column in (
        b"column-email",
        b"column-balance",
        b"column-active_runs",
        b"column-date_joined",
        b"column-last_login",
    ):
        assert column in page.content


def test_it_lists_users_in_a_fixed_number_of_queries(
    staff, workflow, django_assert_max_num_queries
) -> None:
    client = Client()
    client.force_login(staff)
    for n in range(3):
        _running(make_user(f"few{n}@example.com"), workflow)
    client.get(reverse(CHANGELIST))  # warm caches (content types, permissions)
    with django_assert_max_num_queries(30) as few:
        client.get(reverse(CHANGELIST))
    for n in range(12):
        _running(make_user(f"many{n}@example.com"), workflow)
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(reverse(CHANGELIST))


def test_it_searches_users_by_email(staff_client, alice, bob) -> None:
    page = staff_client.get(reverse(CHANGELIST), {"q": "alice@"})

    assert [u.email for u in page.context["cl"].result_list] == ["alice@example.com"]


def test_it_filters_users_by_balance_staff_and_active(staff_client, staff, alice, bob) -> None:
    set_balance_for_test(alice, 0)
    bob.is_active = False
    bob.save()

    def emails(**params: str) -> set[str]:
        return {
            u.email for u in staff_client.get(reverse(CHANGELIST), params).context["cl"].result_list
        }

    assert emails(has_balance="no") == {"alice@example.com"}
    assert "alice@example.com" not in emails(has_balance="yes")
    assert emails(is_staff__exact="1") == {"staff@example.com"}
    assert emails(is_active__exact="0") == {"bob@example.com"}


def test_it_shows_the_balance_and_recent_ledger_and_runs_on_the_user_page(
    staff_client, alice, workflow
) -> None:
    generation = _running(alice, workflow)

    page = staff_client.get(reverse("admin:accounts_user_change", args=[alice.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert "<strong>3</strong>" in html  # 5 signup bonus - 2 charged
    formsets = {f.opts.__class__.__name__: f for f in page.context["inline_admin_formsets"]}
    ledger = formsets["RecentLedgerInline"].formset
    runs = formsets["RecentGenerationInline"].formset
    assert [f.instance.kind for f in ledger.forms] == ["generation_charge", "signup_bonus"]
    assert [f.instance.pk for f in runs.forms] == [generation.pk]
    # Read-only: no add row, no delete box, no editable inputs for the entries.
    assert not formsets["RecentLedgerInline"].has_add_permission
    assert not formsets["RecentLedgerInline"].has_change_permission
    assert 'name="ledger_entries-0-amount"' not in html


def test_it_saves_the_user_page_without_touching_the_ledger(staff_client, alice, workflow) -> None:
    _running(alice, workflow)
    entries = list(
        LedgerEntry.objects.filter(user=alice).values_list("pk", "amount", "balance_after")
    )
    page = staff_client.get(reverse("admin:accounts_user_change", args=[alice.pk]))
    data = {
        "email": "alice@example.com",
        "is_active": "on",
        "date_joined_0": "2025-01-01",
        "date_joined_1": "10:00:00",
    }
    # Management forms of the read-only inlines, as the page rendered them.
    for inline in page.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in ("TOTAL_FORMS", "INITIAL_FORMS", "MIN_NUM_FORMS", "MAX_NUM_FORMS"):
            data[f"{management.prefix}-{name}"] = management.initial.get(name, 0)

    response = staff_client.post(reverse("admin:accounts_user_change", args=[alice.pk]), data)

    assert response.status_code == 302, response.context["errors"] if response.context else response
    alice.refresh_from_db()
    assert alice.is_active
    assert (
        list(LedgerEntry.objects.filter(user=alice).values_list("pk", "amount", "balance_after"))
        == entries
    )


def test_it_creates_a_user_by_email_with_the_signup_bonus(staff_client, settings) -> None:
    response = staff_client.post(
        reverse("admin:accounts_user_add"),
        {
            "email": "New.Person@Example.com",
            "usable_password": "true",
            "password1": "x8#kLq!v9Pz",
            "password2": "x8#kLq!v9Pz",
        },
    )

    assert response.status_code == 302
    user = get_user_model().objects.get(email="new.person@example.com")
    assert user.check_password("x8#kLq!v9Pz")
    assert LedgerEntry.objects.get(user=user).kind == "signup_bonus"


def test_it_refuses_a_second_account_for_the_same_email_in_another_case(
    staff_client, alice
) -> None:
    response = staff_client.post(
        reverse("admin:accounts_user_add"),
        {
            "email": "ALICE@example.com",
            "usable_password": "true",
            "password1": "x8#kLq!v9Pz",
            "password2": "x8#kLq!v9Pz",
        },
    )

    assert response.status_code == 200
    assert "already exists" in str(response.context["adminform"].form.errors["email"])
    assert get_user_model().objects.filter(email__iexact="alice@example.com").count() == 1
