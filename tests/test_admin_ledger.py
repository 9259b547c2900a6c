"""The ledger in the admin: read-only for everyone (superusers included), filterable, searchable,
and exported as CSV exactly as filtered."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from credits.models import LedgerEntry
from credits.services import credits_adjust
from tests.admin_fixtures import action_post

pytest_plugins = ["tests.admin_fixtures"]
pytestmark = [pytest.mark.django_db]


def _snapshot() -> list[tuple]:
    return list(
        LedgerEntry.objects.order_by("pk").values_list(
            "pk", "user_id", "kind", "amount", "balance_after", "reason"
        )
    )


def _csv(response) -> list[dict[str, str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_it_refuses_adding_changing_or_deleting_entries_to_everyone(
    staff_client, clerk_client, alice
) -> None:
    entry = LedgerEntry.objects.get(user=alice)
    before = _snapshot()
    add = reverse("admin:credits_ledgerentry_add")
    change = reverse("admin:credits_ledgerentry_change", args=[entry.pk])
    delete = reverse("admin:credits_ledgerentry_delete", args=[entry.pk])
    forged = {
        "user": alice.pk,
        "kind": "purchase",
        "amount": "1000",
        "balance_after": "1005",
        "reason": "free",
    }

    for client in (staff_client, clerk_client):
        assert client.get(add).status_code == 403
        assert client.post(add, forged).status_code == 403
        assert client.post(change, forged).status_code == 403
        assert client.get(delete).status_code == 403
        assert client.post(delete, {"post": "yes"}).status_code == 403
        bulk = client.post(
            reverse("admin:credits_ledgerentry_changelist"),
            action_post("delete_selected", entry.pk, post="yes"),
        )
        assert bulk.status_code in (200, 302)

    assert _snapshot() == before


def test_it_shows_an_entry_read_only_with_no_save_or_delete(staff_client, alice) -> None:
    entry = LedgerEntry.objects.get(user=alice)

    page = staff_client.get(reverse("admin:credits_ledgerentry_change", args=[entry.pk]))

    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert b"deletelink" not in page.content
    changelist = staff_client.get(reverse("admin:credits_ledgerentry_changelist"))
    assert changelist.context["action_form"] is None  # not even "delete selected"
    assert reverse("admin:credits_ledgerentry_add").encode() not in changelist.content


def test_it_links_each_entry_to_its_user_and_actor(staff_client, staff, alice) -> None:
    credits_adjust(user=alice, amount=3, reason="goodwill", actor=staff)

    page = staff_client.get(
        reverse("admin:credits_ledgerentry_changelist"), {"kind__exact": "admin_adjustment"}
    )

    html = page.content.decode()
    assert (
        f'href="{reverse("admin:accounts_user_change", args=[alice.pk])}">alice@example.com</a>'
        in html
    )
    assert (
        f'href="{reverse("admin:accounts_user_change", args=[staff.pk])}">staff@example.com</a>'
        in html
    )
    assert "+3" in html


def test_it_filters_by_kind_and_searches_by_email(staff_client, staff, alice, bob) -> None:
    credits_adjust(user=alice, amount=3, reason="goodwill", actor=staff)
    url = reverse("admin:credits_ledgerentry_changelist")

    by_kind = staff_client.get(url, {"kind__exact": "admin_adjustment"}).context["cl"].result_list
    by_email = staff_client.get(url, {"q": "bob@example.com"}).context["cl"].result_list
    today = (
        staff_client.get(url, {"created_at__gte": "2000-01-01 00:00:00+00:00"})
        .context["cl"]
        .result_list
    )

    assert [(e.user.email, e.amount) for e in by_kind] == [("alice@example.com", 3)]
    assert [(e.user.email, e.kind) for e in by_email] == [("bob@example.com", "signup_bonus")]
    assert len(today) == LedgerEntry.objects.count()
    # The user page's "full ledger" link filters by user.
    by_user = staff_client.get(url, {"user": str(bob.pk)}).context["cl"].result_list
    assert {e.user_id for e in by_user} == {bob.pk}


def test_it_exports_the_filtered_list_as_csv(staff_client, staff, alice, bob) -> None:
    credits_adjust(user=alice, amount=3, reason="goodwill", actor=staff)
    credits_adjust(user=bob, amount=-1, reason="correction", actor=staff)
    export = reverse("admin:credits_ledgerentry_export")

    everything = staff_client.get(export)
    adjustments = staff_client.get(export, {"kind__exact": "admin_adjustment"})
    alices = staff_client.get(export, {"kind__exact": "admin_adjustment", "q": "alice"})

    assert everything.status_code == 200
    assert everything["Content-Type"].startswith("text/csv")
    assert "attachment" in everything["Content-Disposition"]
    assert len(_csv(everything)) == LedgerEntry.objects.count()
    assert sorted((r["user"], r["amount"], r["actor"]) for r in _csv(adjustments)) == [
        ("alice@example.com", "3", "staff@example.com"),
        ("bob@example.com", "-1", "staff@example.com"),
    ]
    assert [(r["user"], r["reason"]) for r in _csv(alices)] == [("alice@example.com", "goodwill")]


def test_it_links_the_export_to_the_current_filters(staff_client) -> None:
    page = staff_client.get(
        reverse("admin:credits_ledgerentry_changelist"), {"kind__exact": "purchase"}
    )

    assert (
        f"{reverse('admin:credits_ledgerentry_export')}?kind__exact=purchase".encode()
        in page.content
    )


def test_it_keeps_spreadsheet_formulas_out_of_the_export(staff_client, staff, alice) -> None:
    credits_adjust(
        user=alice, amount=1, reason='=HYPERLINK("http://evil.example","click")', actor=staff
    )

    rows = _csv(
        staff_client.get(
            reverse("admin:credits_ledgerentry_export"), {"kind__exact": "admin_adjustment"}
        )
    )

    assert rows[0]["reason"].startswith("'=")


def test_it_answers_bad_export_filters_with_a_message_not_an_error(staff_client) -> None:
    response = staff_client.get(
        reverse("admin:credits_ledgerentry_export"), {"created_at__gte": "not-a-date"}
    )

    assert response.status_code == 302


def test_it_refuses_the_export_to_non_staff(alice_client) -> None:
    response = alice_client.get(reverse("admin:credits_ledgerentry_export"))

    assert response.status_code == 302
    assert reverse("admin:login") in response.url
