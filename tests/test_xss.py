"""Hostile text never becomes markup: prompts (typed by users), workflow names (typed by staff),
errors, live statuses and output URLs (sent by ComfyDeploy) are escaped on every page that shows
them, the owner's pages and the admin alike. And every HTML response carries a nonce-based
Content-Security-Policy, the second line of defence if something ever slips through."""

import re
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from credits.services import credits_adjust
from generations.models import Generation, GenerationEvent, Status
from generations.services import webhook_token
from workflows.models import Workflow, WorkflowInput

PROMPT = '<script>alert("prompt")</script><img src=x onerror=alert(1)>'
NAME = "<svg onload=alert(2)>Evil workflow"
DESCRIPTION = '"><script>alert(3)</script>'
UPSTREAM_ERROR = "<img src=x onerror=alert(4)> upstream said no"
LIVE_STATUS = "<script>alert(5)</script>Executing"
REASON = "<iframe src=javascript:alert(6)>"
UPSTREAM_STATUS = "<b onmouseover=alert(8)>x"  # fits the 32-character column
HOSTILE = (PROMPT, NAME, DESCRIPTION, UPSTREAM_ERROR, LIVE_STATUS, REASON, UPSTREAM_STATUS)


class _Markup(HTMLParser):
    """Collects what a browser would treat as markup: tags and their attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))


def _tags(html: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Markup()
    parser.feed(html)
    return parser.tags


def assert_no_injected_markup(html: str) -> None:
    for payload in HOSTILE:
        assert payload not in html, f"unescaped: {payload}"
    for tag, attrs in _tags(html):
        handlers = [name for name in attrs if name.startswith("on")]
        assert not handlers, f"<{tag}> with an inline event handler {handlers}"
        if tag == "script":
            assert "src" in attrs or "nonce" in attrs or attrs.get("type") == "application/json", (
                "an injected inline <script>"
            )
        for name in ("href", "src", "action", "formaction"):
            assert (
                not attrs.get(name, "").strip().lower().startswith(("javascript:", "data:text"))
            ), f"<{tag} {name}={attrs[name]!r}>"


def assert_csp(response) -> None:
    """A nonce-based policy, and every inline script carries its nonce."""
    policy = response.headers.get("Content-Security-Policy", "")
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    script_src = directives.get("script-src", [])
    assert "'self'" in script_src, policy
    # Django adds the nonce only to pages that use one; a page without is stricter still.
    nonces = [s for s in script_src if s.startswith("'nonce-")]
    assert len(nonces) <= 1, policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, policy
    assert directives.get("default-src") == ["'self'"]
    assert directives.get("object-src") == ["'none'"]
    assert directives.get("base-uri") == ["'self'"]
    assert directives.get("frame-ancestors") == ["'none'"]
    nonce = nonces[0][len("'nonce-") : -1] if nonces else None
    html = response.content.decode()
    for tag, attrs in _tags(html):
        if tag == "script" and "src" not in attrs and attrs.get("type") != "application/json":
            assert nonce and attrs.get("nonce") == nonce, (
                "an inline <script> without the page's nonce"
            )


@pytest.fixture
def hostile(alice, staff) -> dict[str, object]:
    """Alice's generations and a workflow full of hostile text, as they would arrive."""
    workflow = Workflow.objects.create(
        name=NAME, slug="evil", description=DESCRIPTION, deployment_id="evil-deployment", cost=1
    )
    WorkflowInput.objects.create(
        workflow=workflow,
        input_id="prompt",
        label=NAME,
        type=WorkflowInput.Type.LONG_TEXT,
        required=True,
    )
    running = Generation.objects.create(
        user=alice,
        workflow=workflow,
        cost=1,
        inputs={"prompt": PROMPT},
        status=Status.RUNNING,
        run_id="run-running",
        live_status=LIVE_STATUS,
        progress=0.4,
        outputs=[
            {
                "url": 'https://cdn.example.com/a.png?x="><script>',
                "type": "image",
                "output_id": PROMPT,
            }
        ],
        last_synced_at=timezone.now(),  # fresh: the pages do not ask upstream about it
    )
    failed = Generation.objects.create(
        user=alice,
        workflow=workflow,
        cost=1,
        inputs={"prompt": PROMPT, NAME: PROMPT},
        status=Status.FAILED,
        run_id="run-failed",
        error=UPSTREAM_ERROR,
        last_synced_at=timezone.now(),
    )
    GenerationEvent.objects.create(
        generation=failed,
        status=Status.FAILED,
        upstream_status=UPSTREAM_STATUS,
        source="webhook",
        detail=UPSTREAM_ERROR,
    )
    credits_adjust(user=alice, amount=3, reason=REASON, actor=staff)
    return {"workflow": workflow, "running": running, "failed": failed}


def _staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(
    "page",
    [
        "dashboard",
        "dashboard?workflow=evil",
        "history",
        "detail-running",
        "detail-failed",
        "credits",
    ],
)
def test_it_escapes_hostile_text_on_the_owners_pages(hostile, alice_client, page) -> None:
    urls = {
        "dashboard": reverse("dashboard"),
        "dashboard?workflow=evil": reverse("dashboard") + "?workflow=evil",
        "history": reverse("history"),
        "detail-running": reverse("generation_detail", args=[hostile["running"].id]),
        "detail-failed": reverse("generation_detail", args=[hostile["failed"].id]),
        "credits": reverse("credits"),
    }

    response = alice_client.get(urls[page])

    assert response.status_code == 200
    html = response.content.decode()
    assert_no_injected_markup(html)
    assert_csp(response)


@pytest.mark.django_db
def test_it_shows_the_hostile_prompt_as_text(hostile, alice_client) -> None:
    """Escaped, not dropped: the owner still sees exactly what they typed."""
    html = alice_client.get(
        reverse("generation_detail", args=[hostile["failed"].id])
    ).content.decode()

    assert "&lt;script&gt;alert(&quot;prompt&quot;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(4)&gt; upstream said no" in html


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["history", "detail"])
def test_it_never_turns_an_upstream_javascript_url_into_a_link(
    alice, workflow, alice_client, page
) -> None:
    """Through the real ingestion path: a webhook whose outputs carry script URLs."""
    generation = Generation.objects.create(
        user=alice,
        workflow=workflow,
        cost=2,
        inputs={"prompt": "a fox"},
        status=Status.RUNNING,
        run_id="run-js",
        last_synced_at=timezone.now(),
    )
    hostile_urls = [
        "javascript:alert(7)",
        " JavaScript:alert(8)",
        "data:text/html,<script>alert(9)</script>",
    ]
    outputs = [
        {
            "data": {
                "images": [
                    {"url": url} for url in [*hostile_urls, "https://cdn.example.com/ok.png"]
                ]
            }
        }
    ]
    delivered = Client().post(
        f"/webhooks/comfydeploy/{generation.id}/{webhook_token(generation.id)}/",
        {"status": "success", "run_id": "run-js", "outputs": outputs},
        content_type="application/json",
    )
    assert delivered.status_code == 200
    url = (
        reverse("history")
        if page == "history"
        else reverse("generation_detail", args=[generation.id])
    )

    response = alice_client.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    assert_no_injected_markup(html)
    assert "alert(" not in html


@pytest.mark.django_db
def test_it_escapes_the_polled_card_too(hostile, alice_client) -> None:
    response = alice_client.get(
        reverse("generation_card", args=[hostile["running"].id]), headers={"HX-Request": "true"}
    )

    assert response.status_code == 200
    assert_no_injected_markup(response.content.decode())


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url_name",
    [
        "admin:generations_generation_changelist",
        "admin:workflows_workflow_changelist",
        "admin:credits_ledgerentry_changelist",
        "admin:accounts_user_changelist",
    ],
)
def test_it_escapes_hostile_text_in_the_admin_lists(hostile, staff, url_name) -> None:
    response = _staff_client(staff).get(reverse(url_name), {"q": PROMPT})
    everything = _staff_client(staff).get(reverse(url_name))

    for page in (response, everything):
        assert page.status_code == 200
        assert_no_injected_markup(page.content.decode())
        assert_csp(page)


@pytest.mark.django_db
@pytest.mark.parametrize("which", ["running", "failed"])
def test_it_escapes_hostile_text_on_the_admin_generation_page(hostile, staff, which) -> None:
    generation = hostile[which]

    response = _staff_client(staff).get(
        reverse("admin:generations_generation_change", args=[generation.pk])
    )

    assert response.status_code == 200
    assert_no_injected_markup(response.content.decode())
    assert_csp(response)


@pytest.mark.django_db
def test_it_escapes_hostile_text_on_the_admin_workflow_page(hostile, staff) -> None:
    response = _staff_client(staff).get(
        reverse("admin:workflows_workflow_change", args=[hostile["workflow"].pk])
    )

    assert response.status_code == 200
    assert_no_injected_markup(response.content.decode())


@pytest.mark.django_db
def test_it_serves_api_json_as_json_not_html(hostile, alice_client) -> None:
    response = alice_client.get(f"/api/v1/generations/{hostile['failed'].id}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response.json()["inputs"]["prompt"] == PROMPT


# --- CSP on every HTML response ------------------------------------------------------------------

ANONYMOUS_PAGES = [
    "/",
    "/accounts/login/",
    "/accounts/signup/",
    "/accounts/password/reset/",
    "/this-page-does-not-exist/",
]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ANONYMOUS_PAGES)
def test_it_sends_a_nonce_csp_on_every_public_html_page(client, path) -> None:
    response = client.get(path)

    assert response["Content-Type"].startswith("text/html")
    assert_csp(response)


@pytest.mark.django_db
def test_it_sends_a_csp_on_the_csrf_failure_page(alice) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post(reverse("account_logout"))

    assert response.status_code == 403
    assert_csp(response)


@pytest.mark.django_db
def test_it_uses_a_fresh_nonce_on_every_response(staff) -> None:
    client = _staff_client(staff)

    def nonce() -> str:
        policy = client.get("/admin/")["Content-Security-Policy"]  # the admin uses nonces
        return re.search(r"'nonce-([^']+)'", policy).group(1)

    assert nonce() != nonce()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/",
        "/dashboard/history/",
        "/dashboard/credits/",
        "/accounts/email/",
        "/accounts/password/change/",
        "/admin/",
        "/admin/generations/generation/",
        "/admin/credits/ledgerentry/",
        "/admin/workflows/workflow/",
        "/admin/accounts/user/",
        "/admin/credits/creditpackage/add/",
    ],
)
def test_it_sends_a_nonce_csp_on_every_signed_in_html_page(staff, path) -> None:
    response = _staff_client(staff).get(path)

    assert response.status_code == 200, path
    assert response["Content-Type"].startswith("text/html")
    assert_csp(response)
