"""A creator presses Buy on a package in real Chromium and lands on the (fake) Stripe Checkout
page; once Stripe's webhook confirms the payment, the page Stripe sends them back to shows the
credits, without a reload."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from playwright.sync_api import Page, expect

from credits.models import CreditPackage
from credits.services import balance_get
from payments.models import Purchase
from tests.e2e.conftest import BrowserErrors, log_in, make_account, screenshot
from tests.payments_fixtures import FakeStripe, completed_event, post_event

pytest_plugins = ["tests.payments_fixtures"]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stripe_checkout(product: dict[str, Any], fake_stripe: FakeStripe, settings: Any) -> FakeStripe:
    """Stripe configured (against the fake). The fake's hosted page is plain http on loopback,
    so the CSP's form-action (which also governs the redirect after a form POST) must allow it;
    in production Checkout is on https:, which the policy already allows."""
    csp = {**settings.SECURE_CSP}
    csp["form-action"] = [*csp["form-action"], fake_stripe.url]
    settings.SECURE_CSP = csp
    return fake_stripe


def test_it_takes_the_buyer_to_checkout_and_shows_the_credits_once_paid(
    page: Page, stripe_checkout: FakeStripe, browser_errors: BrowserErrors
) -> None:
    alice = make_account("alice@example.com")
    creator = CreditPackage.objects.get(name="Creator")
    log_in(page, "alice@example.com")

    page.goto("/dashboard/credits/")
    buy = page.locator(f'form[action="/dashboard/credits/buy/{creator.pk}/"] button[type=submit]')
    expect(buy).to_be_visible()
    screenshot(page, "credits-buy-buttons")
    buy.click()

    # Stripe's hosted page (the fake), for the session we opened for this purchase.
    purchase = Purchase.objects.get(user=alice)
    page.wait_for_url(f"{stripe_checkout.url}/pay/{purchase.stripe_session_id}")
    expect(page).to_have_title("Fake Stripe Checkout")
    assert (purchase.status, purchase.credits) == (Purchase.Status.PENDING, 1500)
    browser_errors.assert_clean()

    # Stripe sends the buyer back before its webhook arrives: the page waits and polls.
    page.goto(f"/dashboard/credits/purchases/{purchase.pk}/success/")
    expect(page.locator("[data-purchase-status]")).to_have_attribute(
        "data-purchase-status", "pending"
    )
    assert balance_get(user=alice) == 5

    assert (
        post_event(
            Client(), completed_event(stripe_checkout, purchase.stripe_session_id)
        ).status_code
        == 200
    )

    expect(page.locator("[data-purchase-status]")).to_have_attribute("data-purchase-status", "paid")
    expect(page.locator("#balance [data-balance]")).to_have_attribute("data-balance", "1505")
    expect(page).to_have_url(re.compile(rf"/purchases/{purchase.pk}/success/$"))
    screenshot(page, "credits-purchase-confirmed")
    browser_errors.assert_clean()
