"""Real-browser tests: headless system Chromium (Playwright) against the app on pytest-django's live
server, with the in-process ComfyDeploy simulator sending its webhooks to that live server.

Needs the ``chromium`` system package (``/usr/bin/chromium``; ``CHROMIUM_PATH`` overrides it). No
browser is ever downloaded (``playwright install`` is not used). Screenshots land in
``docs/screenshots/`` (the CI artifact folder).
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from credits.models import CreditPackage
from generations.simulator import Simulator
from tests.conftest import make_workflow

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PASSWORD = "A-long-and-unusual-passphrase-42"
# Slow enough that a person (and the test) sees queued → running → succeeded, fast enough for CI.
SIM_STEP_SECONDS = 0.25
# Generous deadline for things a browser shows within a few polls (the card polls every 3 s).
UI_TIMEOUT_MS = 20_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/e2e/ is a browser test (``-m "not e2e"`` skips them all)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if item.path.resolve().is_relative_to(here):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one test module. Module-scoped on purpose: Playwright's sync API keeps an
    asyncio loop running in this thread while it is open, which must not leak into other tests."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        message = (
            f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # The ORM calls a test makes between browser steps are plain synchronous code, but Django's
    # async-safety guard sees Playwright's loop; it stands down only while the browser is open.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class BrowserErrors:
    """What went wrong in the page: uncaught errors, console errors (CSP violations show up
    there), and any alert/confirm dialog (which no page of ours ever opens)."""

    def __init__(self) -> None:
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.dialogs: list[str] = []

    def attach(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None,
        )

        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)

    def assert_clean(self) -> None:
        assert self.page_errors == []
        assert self.dialogs == []
        assert self.console_errors == []


@pytest.fixture
def browser_errors() -> BrowserErrors:
    return BrowserErrors()


def _page_in(
    browser: Browser, live_server: Any, errors: BrowserErrors, locale: str
) -> Iterator[Page]:
    context = browser.new_context(
        viewport=DESKTOP, locale=locale, base_url=live_server.url, accept_downloads=True
    )
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    errors.attach(page)
    yield page
    context.close()


@pytest.fixture
def page(browser: Browser, live_server: Any, browser_errors: BrowserErrors) -> Iterator[Page]:
    """A fresh browser context (no cookies) at desktop size, Spanish first like our first users."""
    yield from _page_in(browser, live_server, browser_errors, "es-ES")


@pytest.fixture
def english_page(
    browser: Browser, live_server: Any, browser_errors: BrowserErrors
) -> Iterator[Page]:
    """Like ``page``, for a browser that prefers English (the pages then render in English)."""
    yield from _page_in(browser, live_server, browser_errors, "en-US")


@pytest.fixture
def sim(live_server: Any, settings: Any) -> Iterator[Simulator]:
    """The ComfyDeploy simulator, wired both ways: the app calls it, and its webhooks reach the
    app on the live server (webhook URLs are built from APP_URL)."""
    simulator = Simulator(step_seconds=SIM_STEP_SECONDS).start()
    simulator.configure(webhook_retry_delay=0.1, webhook_timeout=5.0)
    settings.COMFY_DEPLOY_API_KEY = ""
    settings.SIMULATOR_URL = simulator.url
    settings.APP_URL = live_server.url
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def product(transactional_db: None, sim: Simulator, settings: Any) -> dict[str, Any]:
    """What a fresh install after ``manage.py seed`` offers: the text-to-image workflow and the
    three credit packages."""
    settings.ACCOUNT_RATE_LIMITS = False
    settings.SIGNUP_BONUS_CREDITS = 5
    settings.MAX_CONCURRENT_RUNS = 2
    workflow = make_workflow()
    workflow.description = "Describe a picture in words and get a 512×512 image."
    workflow.save(update_fields=["description"])
    for position, (name, credits, price) in enumerate(
        [("Básico", 500, "99.00"), ("Creator", 1500, "249.00"), ("Pro", 5000, "699.00")]
    ):
        CreditPackage.objects.create(name=name, credits=credits, price=price, position=position)
    return {"workflow": workflow, "sim": sim}


def screenshot(page: Page, name: str) -> None:
    """Save the whole page as docs/screenshots/<name>.png (scrolled to the top first)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True, animations="disabled")


def sign_up(page: Page, email: str) -> None:
    """Create an account through allauth's real signup form; ends on the dashboard."""
    page.goto("/accounts/signup/")
    page.fill("#id_email", email)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("main form button[type=submit]")
    page.wait_for_url("**/dashboard/")


def log_in(page: Page, email: str) -> None:
    """Sign in through allauth's login form (the account was made with ``make_account``)."""
    page.goto("/accounts/login/")
    page.fill("#id_login", email)
    page.fill("#id_password", PASSWORD)
    page.click("main form button[type=submit]")
    page.wait_for_url("**/dashboard/")


def make_account(email: str) -> Any:
    """An account made the way the signup makes it (the signup bonus included)."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(email=email, password=PASSWORD)


def generate(page: Page, prompt: str) -> None:
    """Fill the prompt and press Generate; waits for the new card to appear."""
    before = page.locator("#generations .gen-card").count()
    page.fill("#id_prompt", prompt)
    page.click("#generate-actions button[type=submit]")
    expect(page.locator("#generations .gen-card")).to_have_count(before + 1)
