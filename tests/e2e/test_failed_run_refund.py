"""A run that fails upstream shows, in the browser, that its credits came back: the card says so
and the top bar's balance returns to what it was, without a reload."""

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import generate, log_in, make_account, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("product")]


def test_it_shows_the_refund_and_restores_the_balance(page: Page, browser_errors) -> None:
    make_account("fails@example.com")
    log_in(page, "fails@example.com")
    balance = page.locator("#balance [data-balance]")
    expect(balance).to_have_attribute("data-balance", "5")

    generate(page, "A castle made of clouds [sim:fail]")

    card = page.locator("#generations .gen-card").first
    expect(balance).to_have_attribute("data-balance", "3")
    expect(card).to_have_attribute("data-status", "failed")
    alert = card.locator(".alert-error")
    expect(alert).to_contain_text("sus 2 créditos fueron reembolsados")
    expect(alert).to_contain_text("Tus créditos fueron reembolsados")
    expect(card.locator("progress")).to_have_count(0)
    expect(balance).to_have_attribute("data-balance", "5")
    screenshot(page, "dashboard-failed-desktop")

    page.goto("/dashboard/credits/")
    kinds = page.locator("#ledger tbody tr")
    expect(kinds.nth(0)).to_have_attribute("data-kind", "generation_refund")
    expect(kinds.nth(1)).to_have_attribute("data-kind", "generation_charge")
    browser_errors.assert_clean()
