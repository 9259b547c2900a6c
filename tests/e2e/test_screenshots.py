"""Screenshots of every page at desktop (1280x800) and phone (390x844) widths, saved under
docs/screenshots/ (the CI artifact folder, shown in the README). Each page is also checked for
what a finished page needs: it renders in Spanish, nothing overflows sideways on a phone, and the
browser reports no error (CSP violations included)."""

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import DESKTOP, PHONE, generate, log_in, make_account, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("product")]

ANONYMOUS_PAGES = {
    "landing": "/",
    "login": "/accounts/login/",
    "signup": "/accounts/signup/",
    "password-reset": "/accounts/password/reset/",
}
SIGNED_IN_PAGES = {
    "dashboard": "/dashboard/",
    "history": "/dashboard/history/",
    "credits": "/dashboard/credits/",
    "account-email": "/accounts/email/",
    "account-password": "/accounts/password/change/",
    "logout": "/accounts/logout/",
}


def _check_and_shoot(page: Page, name: str, device: str) -> None:
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.locator("#main")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name} scrolls sideways on {device} by {overflow}px"
    screenshot(page, f"{name}-{device}")


def test_it_saves_a_screenshot_of_every_page(page: Page, browser_errors) -> None:
    for name, url in ANONYMOUS_PAGES.items():
        for device, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            page.goto(url)
            _check_and_shoot(page, name, device)

    # A signup with mistakes shows clear errors next to the fields.
    page.set_viewport_size(PHONE)
    page.goto("/accounts/signup/")
    page.fill("#id_email", "not-an-email")
    page.fill("#id_password1", "short")
    page.fill("#id_password2", "different")
    page.locator("#id_email").evaluate("input => input.form.noValidate = true")
    page.click("main form button[type=submit]")
    expect(page.locator(".field-errors").first).to_be_visible()
    _check_and_shoot(page, "signup-errors", "phone")

    page.set_viewport_size(DESKTOP)
    make_account("gallery@example.com")
    log_in(page, "gallery@example.com")
    page.goto("/dashboard/history/")
    _check_and_shoot(page, "history-empty", "desktop")

    page.goto("/dashboard/")
    generate(page, "A watercolour of a lighthouse at dusk")
    expect(page.locator("#generations .gen-card").first).to_have_attribute(
        "data-status", "succeeded"
    )
    generate(page, "A paper boat on a stormy sea [sim:fail]")
    expect(page.locator("#generations .gen-card").first).to_have_attribute("data-status", "failed")

    for name, url in SIGNED_IN_PAGES.items():
        for device, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            page.goto(url)
            _check_and_shoot(page, name, device)

    # The smallest phones in use (360 px wide) get every page without sideways scrolling.
    page.set_viewport_size({"width": 360, "height": 740})
    for name, url in SIGNED_IN_PAGES.items():
        page.goto(url)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} scrolls sideways at 360px by {overflow}px"

    page.set_viewport_size(DESKTOP)
    page.goto("/dashboard/history/")
    page.locator(".gallery-item").nth(1).click()
    expect(page.locator(".detail-images img")).to_be_visible()
    for device, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        _check_and_shoot(page, "generation-detail", device)
    browser_errors.assert_clean()


def test_it_saves_dark_mode_and_english_screenshots(page: Page, browser_errors) -> None:
    page.emulate_media(color_scheme="dark")
    page.goto("/")
    _check_and_shoot(page, "landing-dark", "desktop")
    make_account("night@example.com")
    log_in(page, "night@example.com")
    generate(page, "A neon city in the rain")
    expect(page.locator("#generations .gen-card").first).to_have_attribute(
        "data-status", "succeeded"
    )
    _check_and_shoot(page, "dashboard-dark", "desktop")
    page.set_viewport_size(PHONE)
    _check_and_shoot(page, "dashboard-dark", "phone")

    # The language switcher in the top bar: English from then on.
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(DESKTOP)
    page.select_option("#language-select", "en")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#balance")).to_contain_text("3 credits")
    screenshot(page, "dashboard-english-desktop")
    browser_errors.assert_clean()
