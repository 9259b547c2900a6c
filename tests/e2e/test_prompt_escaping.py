"""Prompts are untrusted: one full of markup is shown as text on every page that shows it, and no
script runs (no dialog opens, no global is set, no CSP violation is reported)."""

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import generate, log_in, make_account

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("product")]

PROMPT = '<script>window.pwned = 1; alert("xss")</script><img src=x onerror="alert(1)"> a cat'


def test_it_shows_a_script_prompt_as_text_and_runs_nothing(page: Page, browser_errors) -> None:
    make_account("mallory@example.com")
    log_in(page, "mallory@example.com")

    generate(page, PROMPT)

    card = page.locator("#generations .gen-card").first
    expect(card.locator(".prompt-text")).to_have_text(PROMPT)
    expect(card).to_have_attribute("data-status", "succeeded")
    expect(card.locator(".prompt-text")).to_have_text(PROMPT)
    assert card.locator("script").count() == 0

    page.goto("/dashboard/history/")
    expect(page.locator(".gallery-item .prompt-text").first).to_have_text(PROMPT)
    page.locator(".gallery-item").first.click()
    expect(page.locator("dl.facts dd.prompt-text").first).to_have_text(PROMPT)

    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("main script, main img[src='x']").count() == 0
    browser_errors.assert_clean()
