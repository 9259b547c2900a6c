"""A new creator, in a real browser: signs up, sees the welcome credits, generates an image, watches
the card go from queued to the image, sees the balance drop to 3 without reloading, then finds the
run in History and the charge on the Credits page. On a desktop and on a phone-sized screen."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import DESKTOP, PHONE, generate, screenshot, sign_up

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("product")]


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_it_takes_a_new_user_from_signup_to_a_downloadable_image(
    page: Page, browser_errors, device: str
) -> None:
    page.set_viewport_size(DESKTOP if device == "desktop" else PHONE)
    page.goto("/")
    expect(page.locator("html")).to_have_attribute("lang", "es")
    page.locator("main").get_by_role("link", name=re.compile("cuenta gratis", re.I)).click()
    expect(page).to_have_url(re.compile(r"/accounts/signup/$"))

    sign_up(page, f"new-{device}@example.com")

    balance = page.locator("#balance [data-balance]")
    expect(balance).to_have_attribute("data-balance", "5")
    expect(page.locator("#balance")).to_contain_text("5 créditos")

    generate(page, "A red fox in the snow at dawn")
    card = page.locator("#generations .gen-card").first
    # The answer to the POST is the queued card; the charge shows in the top bar straight away.
    expect(card).to_have_attribute("data-status", "queued")
    expect(card.locator("progress")).to_be_visible()
    expect(balance).to_have_attribute("data-balance", "3")
    # Then polling (every 3 s) brings the finished image.
    expect(card).to_have_attribute("data-status", "succeeded")
    image = card.locator(".gen-images img").first
    expect(image).to_be_visible()
    assert page.evaluate("img => img.complete && img.naturalWidth > 0", image.element_handle())
    download = card.locator("a[download]").first
    response = page.request.get(download.get_attribute("href"))
    assert response.ok
    assert response.headers["content-type"] == "image/png"
    assert response.body().startswith(b"\x89PNG")
    expect(balance).to_have_attribute("data-balance", "3")
    screenshot(page, f"dashboard-succeeded-{device}")

    page.locator("header nav").get_by_role("link", name="Historial").click()
    expect(page).to_have_url(re.compile(r"/dashboard/history/$"))
    items = page.locator(".gallery-item")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("A red fox in the snow at dawn")
    expect(items.first.locator(".badge")).to_have_class(re.compile("badge-succeeded"))

    items.first.click()
    expect(page.locator("h1")).to_contain_text("Text to image")
    expect(page.locator(".detail-images img")).to_be_visible()

    page.locator("header nav").get_by_role("link", name="Créditos").click()
    rows = page.locator("#ledger tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-kind", "generation_charge")
    expect(rows.first.locator("td.num").first).to_have_text("−2")
    expect(page.locator("#balance-figure")).to_contain_text("3")
    browser_errors.assert_clean()
