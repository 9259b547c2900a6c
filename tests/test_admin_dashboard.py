"""The admin index opens on the business at a glance: users, credits sold, granted, spent and
refunded, today's runs by status, and stuck runs linked to the filtered list."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from credits.services import credits_adjust, generation_charge, generation_refund, purchase_credit
from generations.models import Generation

pytest_plugins = ["tests.admin_fixtures"]
pytestmark = [pytest.mark.django_db]


def _run(user, workflow, status: str) -> Generation:
    generation = Generation.objects.create(
        user=user, workflow=workflow, cost=workflow.cost, status=status
    )
    generation_charge(generation=generation)
    return generation


def test_it_summarises_users_credits_and_runs_on_the_index(
    staff_client, staff, alice, bob, workflow, settings
) -> None:
    purchase_credit(user=alice, amount=100, reason="Creator pack", external_ref="cs_1")
    credits_adjust(user=bob, amount=7, reason="goodwill", actor=staff)
    credits_adjust(user=bob, amount=-2, reason="correction", actor=staff)
    _run(alice, workflow, "succeeded")
    failed = _run(alice, workflow, "failed")
    generation_refund(generation=failed)
    stuck = _run(bob, workflow, "running")
    stale = timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS + 1)
    Generation.objects.filter(pk=stuck.pk).update(last_synced_at=stale)

    page = staff_client.get(reverse("admin:index"))

    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="summary-users">3<' in html  # staff, alice, bob
    assert 'id="summary-sold">100<' in html
    assert 'id="summary-granted">22<' in html  # 3 signup bonuses of 5, plus 7
    assert 'id="summary-removed">2<' in html
    assert 'id="summary-spent">4<' in html  # 3 charges of 2, one refunded
    assert 'id="summary-refunded">2<' in html
    assert 'data-status="succeeded">1<' in html
    assert 'data-status="failed">1<' in html
    assert 'data-status="running">1<' in html
    assert "1 stuck run" in html
    assert f"{reverse('admin:generations_generation_changelist')}?stuck=yes" in html
    # The app list is still there below the summary.
    assert reverse("admin:workflows_workflow_changelist") in html


def test_it_links_stuck_runs_to_exactly_those_runs(staff_client, alice, workflow, settings) -> None:
    stuck = _run(alice, workflow, "queued")
    _run(alice, workflow, "running")  # heard from just now
    stale = timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS + 1)
    Generation.objects.filter(pk=stuck.pk).update(last_synced_at=stale)
    Generation.objects.exclude(pk=stuck.pk).update(last_synced_at=timezone.now())

    page = staff_client.get(reverse("admin:generations_generation_changelist"), {"stuck": "yes"})

    assert [g.pk for g in page.context["cl"].result_list] == [stuck.pk]


def test_it_hides_the_figures_from_staff_who_cannot_read_the_ledger(clerk, clerk_client) -> None:
    clerk.user_permissions.remove(*clerk.user_permissions.filter(codename="view_ledgerentry"))

    page = clerk_client.get(reverse("admin:index"))

    assert page.status_code == 200
    assert b"summary-sold" not in page.content
