"""The Generate button tells the truth: at the concurrency cap it is disabled and says why; once the
runs finish it comes back, and when the balance no longer covers a run it is disabled again with a
link to buy credits. All of it without reloading the page."""

import pytest
from playwright.sync_api import Page, expect

from generations.models import Generation
from tests.e2e.conftest import generate, log_in, make_account, screenshot

pytestmark = [pytest.mark.e2e]


def test_it_shows_the_cap_then_the_short_of_credits_state(
    page: Page, product, browser_errors
) -> None:
    sim = product["sim"]
    user = make_account("busy@example.com")
    log_in(page, "busy@example.com")
    button = page.locator("#generate-actions button[type=submit]")
    expect(button).to_be_enabled()

    generate(page, "A lighthouse in a storm [sim:stuck]")
    generate(page, "A lighthouse at noon [sim:stuck]")

    # Two runs in flight is the most at once: the button says so instead of failing on click.
    expect(button).to_be_disabled()
    blocked = page.locator("#generate-blocked")
    expect(blocked).to_contain_text("Ya tienes 2 generaciones en curso")
    expect(page.locator("#balance [data-balance]")).to_have_attribute("data-balance", "1")
    expect(page.locator("#generations .gen-card[data-status=queued]")).to_have_count(2)
    screenshot(page, "dashboard-cap-desktop")

    # The runs finish upstream; the cards notice, and the button explains the new blocker.
    for run_id in Generation.objects.filter(user=user).values_list("run_id", flat=True):
        sim.complete(run_id, "success")
    expect(page.locator("#generations .gen-card[data-status=succeeded]")).to_have_count(2)
    expect(button).to_be_disabled()
    expect(blocked).to_contain_text("cuesta 2 créditos y tu saldo es 1")
    expect(blocked.locator("a[href='/dashboard/credits/']")).to_be_visible()
    screenshot(page, "dashboard-short-of-credits-desktop")
    browser_errors.assert_clean()
