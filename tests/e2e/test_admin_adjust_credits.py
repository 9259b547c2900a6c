"""A staff member signs in through the normal login page, adjusts a customer's credits from the
admin in real Chromium (preview, then confirm), and finds the ledger row with their own name."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from playwright.sync_api import Page, expect

from credits.models import CreditBalance, LedgerEntry
from tests.e2e.conftest import PASSWORD, BrowserErrors, screenshot

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def people(transactional_db: None, settings: Any) -> dict[str, Any]:
    settings.ACCOUNT_RATE_LIMITS = False
    settings.SIGNUP_BONUS_CREDITS = 5
    User = get_user_model()
    return {
        "staff": User.objects.create_superuser(email="ops@example.com", password=PASSWORD),
        "alice": User.objects.create_user(email="alice@example.com", password=PASSWORD),
    }


def test_it_adjusts_credits_in_the_admin_and_shows_who_did_it(
    page: Page, live_server: Any, people: dict[str, Any], browser_errors: BrowserErrors
) -> None:
    alice = people["alice"]

    # Staff sign in through the same allauth page as everyone else.
    page.goto("/accounts/login/?next=/admin/")
    page.locator("input[name=login]").fill("ops@example.com")
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("input[name=password]").press("Enter")
    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.locator("#business-summary")).to_be_visible()
    screenshot(page, "admin-index")

    # From the user's page, the "Adjust credits" button.
    page.goto(reverse("admin:accounts_user_change", args=[alice.pk]))
    screenshot(page, "admin-user-page")
    page.locator("a.adjust-credits-link").click()
    expect(page.locator("td.current-balance")).to_have_text("5")
    page.locator("#id_amount").fill("25")
    page.locator("#id_reason").fill("Goodwill after the outage")
    page.locator("input[name=preview]").click()

    # The preview shows the balance the adjustment will leave; nothing is written yet.
    expect(page.locator("td.balance-after")).to_have_text("30")
    assert CreditBalance.objects.get(user=alice).balance == 5
    screenshot(page, "admin-adjust-credits-preview")
    page.locator("input[name=confirm]").click()

    expect(page).to_have_url(re.compile(rf"/admin/accounts/user/{alice.pk}/change/$"))
    # "…: +25 credits, balance now 30." in whichever language the browser asked for.
    expect(page.locator(".messagelist .success")).to_contain_text(re.compile(r"\+25\D+30\b"))

    # The ledger row names the admin who moved the credits.
    page.goto(reverse("admin:credits_ledgerentry_changelist") + "?kind__exact=admin_adjustment")
    row = page.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td.field-user_link")).to_have_text("alice@example.com")
    expect(row.locator("td.field-signed_amount")).to_have_text("+25")
    expect(row.locator("td.field-reason")).to_have_text("Goodwill after the outage")
    expect(row.locator("td.field-actor_link")).to_have_text("ops@example.com")
    screenshot(page, "admin-ledger-adjustment")

    entry = LedgerEntry.objects.get(user=alice, kind="admin_adjustment")
    assert (entry.amount, entry.balance_after, entry.actor_id) == (25, 30, people["staff"].pk)
    browser_errors.assert_clean()
