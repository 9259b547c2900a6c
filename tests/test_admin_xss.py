"""Hostile text typed by users or staff (a workflow name, a prompt, a reason) is shown as text in
the admin, never run as HTML: lists, detail pages and action messages escape it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from credits.services import credits_adjust, generation_charge
from generations.models import Generation
from tests.admin_fixtures import action_post
from workflows.models import Workflow

pytest_plugins = ["tests.admin_fixtures"]
pytestmark = [pytest.mark.django_db]
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
ESCAPED = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"


@pytest.fixture
def hostile_run(alice, staff) -> Generation:
    workflow = Workflow.objects.create(name=HOSTILE, slug="evil", deployment_id="x", cost=1)
    generation = Generation.objects.create(
        user=alice,
        workflow=workflow,
        cost=1,
        status="running",
        inputs={"prompt": HOSTILE},
        error=HOSTILE,
    )
    generation_charge(generation=generation)
    credits_adjust(user=alice, amount=1, reason=HOSTILE, actor=staff)
    return generation


@pytest.mark.parametrize(
    "url_name",
    [
        "admin:workflows_workflow_changelist",
        "admin:generations_generation_changelist",
        "admin:credits_ledgerentry_changelist",
    ],
)
def test_it_escapes_hostile_text_in_admin_lists(staff_client, hostile_run, url_name) -> None:
    html = staff_client.get(reverse(url_name)).content.decode()

    assert HOSTILE not in html
    assert "<img src=x" not in html
    assert ESCAPED in html


def test_it_escapes_hostile_text_on_detail_pages(staff_client, alice, hostile_run) -> None:
    pages = [
        reverse("admin:generations_generation_change", args=[hostile_run.pk]),
        reverse("admin:workflows_workflow_change", args=[hostile_run.workflow_id]),
        reverse("admin:accounts_user_change", args=[alice.pk]),
    ]
    for url in pages:
        html = staff_client.get(url).content.decode()
        assert "<script>alert" not in html, url
        assert "<img src=x" not in html, url


def test_it_escapes_hostile_names_in_action_messages(staff_client, hostile_run) -> None:
    response = staff_client.post(
        reverse("admin:workflows_workflow_changelist"),
        action_post("delete_selected", hostile_run.workflow_id),
        follow=True,
    )

    html = response.content.decode()
    assert "cannot be deleted" in html
    assert "<script>alert" not in html
    assert "&lt;script&gt;" in html
