"""Staff adjust a user's credits from the admin: preview, confirm, traced to them in the ledger.
Only staff holding ``credits.adjust_credits`` may; a refusal leaves every balance untouched."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from credits.models import CreditBalance, LedgerEntry
from tests.admin_fixtures import action_post, messages_of
from tests.conftest import set_balance_for_test

pytest_plugins = ["tests.admin_fixtures"]
pytestmark = [pytest.mark.django_db]


def _url(*users) -> str:
    return (
        reverse("admin:accounts_user_adjust_credits")
        + "?"
        + urlencode({"user": [u.pk for u in users]}, doseq=True)
    )


def _balance(user) -> int:
    return CreditBalance.objects.get(user=user).balance


def _preview(client, users, amount, reason="goodwill") -> object:
    return client.post(
        _url(*users),
        {"user": [u.pk for u in users], "amount": amount, "reason": reason, "preview": "1"},
    )


def _confirm(client, users, amount, reason="goodwill", token=None) -> object:
    if token is None:
        token = _preview(client, users, amount, reason).context["token"]
    return client.post(
        _url(*users),
        {
            "user": [u.pk for u in users],
            "amount": amount,
            "reason": reason,
            "token": token,
            "confirm": "1",
        },
    )


def test_it_shows_the_current_balance_and_the_balance_the_adjustment_will_leave(
    staff_client, alice
) -> None:
    set_balance_for_test(alice, 7)

    page = staff_client.get(_url(alice))
    assert page.status_code == 200
    assert [r.balance for r in page.context["rows"]] == [7]

    preview = _preview(staff_client, [alice], "-3")
    assert preview.status_code == 200
    assert preview.context["step"] == "preview"
    row = preview.context["rows"][0]
    assert (row.balance, row.after) == (7, 4)
    assert b'class="balance-after"><strong>4</strong>' in preview.content
    # Nothing is written before the confirmation.
    assert _balance(alice) == 7
    assert (
        not LedgerEntry.objects.filter(user=alice, kind="admin_adjustment")
        .exclude(reason="test set-up")
        .exists()
    )


def test_it_records_a_confirmed_adjustment_with_the_acting_admin(
    staff_client, staff, alice
) -> None:
    before = _balance(alice)

    response = _confirm(staff_client, [alice], "10", "Refund for a bad batch")

    assert response.status_code == 302
    assert response.url == reverse("admin:accounts_user_change", args=[alice.pk])
    entry = LedgerEntry.objects.get(user=alice, kind="admin_adjustment")
    assert (entry.amount, entry.balance_after, entry.reason, entry.actor) == (
        10,
        before + 10,
        "Refund for a bad batch",
        staff,
    )
    assert _balance(alice) == before + 10
    assert any("balance now" in m for m in messages_of(response))


def test_it_refuses_an_adjustment_below_zero_with_the_reason_and_writes_nothing(
    staff_client, alice
) -> None:
    set_balance_for_test(alice, 5)
    entries = LedgerEntry.objects.count()

    preview = _preview(staff_client, [alice], "-6")
    assert preview.context["step"] == "edit"
    assert "negative balance" in preview.context["error"]

    # Straight to the confirmation (a stale preview): the credits service refuses it.
    confirmed = staff_client.post(
        _url(alice),
        {"user": alice.pk, "amount": "-6", "reason": "chargeback", "token": "t-1", "confirm": "1"},
    )
    assert confirmed.status_code == 200
    assert (
        "alice@example.com has 5 credits; removing 6 would leave a negative balance."
        in confirmed.context["error"]
    )
    assert b"would leave a negative balance" in confirmed.content
    assert _balance(alice) == 5
    assert LedgerEntry.objects.count() == entries


def test_it_applies_a_confirmed_form_once_even_when_submitted_twice(staff_client, alice) -> None:
    before = _balance(alice)
    token = _preview(staff_client, [alice], "3").context["token"]

    first = _confirm(staff_client, [alice], "3", token=token)
    second = _confirm(staff_client, [alice], "3", token=token)

    assert first.status_code == second.status_code == 302
    assert _balance(alice) == before + 3
    assert LedgerEntry.objects.filter(user=alice, kind="admin_adjustment").count() == 1
    assert any("already submitted" in m for m in messages_of(second))


@pytest.mark.parametrize(
    ("amount", "reason", "field"),
    [
        ("0", "typo", "amount"),
        ("abc", "typo", "amount"),
        ("1.5", "typo", "amount"),
        ("5", "   ", "reason"),
    ],
)
def test_it_explains_a_bad_amount_or_a_missing_reason(
    staff_client, alice, amount, reason, field
) -> None:
    entries = LedgerEntry.objects.count()

    response = _confirm(staff_client, [alice], amount, reason, token="t-2")

    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert LedgerEntry.objects.count() == entries


def test_it_adjusts_each_selected_user_from_the_user_list_action(
    staff_client, staff, alice, bob
) -> None:
    changelist = reverse("admin:accounts_user_changelist")

    response = staff_client.post(changelist, action_post("adjust_credits", alice.pk, bob.pk))

    assert response.status_code == 302
    assert response.url == _url(alice, bob)
    confirmed = _confirm(staff_client, [alice, bob], "4", "Launch gift")
    assert confirmed.status_code == 302
    assert confirmed.url == changelist
    for user in (alice, bob):
        entry = LedgerEntry.objects.get(user=user, kind="admin_adjustment")
        assert (entry.amount, entry.actor, entry.reason) == (4, staff, "Launch gift")


def test_it_adjusts_nobody_when_one_of_the_selected_users_cannot_take_it(
    staff_client, alice, bob
) -> None:
    set_balance_for_test(alice, 10)
    set_balance_for_test(bob, 1)
    entries = LedgerEntry.objects.count()

    response = _confirm(staff_client, [alice, bob], "-2", token="t-3")

    assert response.status_code == 200
    assert "bob@example.com has 1 credits" in response.context["error"]
    assert (_balance(alice), _balance(bob)) == (10, 1)
    assert LedgerEntry.objects.count() == entries


def test_it_shows_an_adjust_button_on_the_user_page(staff_client, alice) -> None:
    page = staff_client.get(reverse("admin:accounts_user_change", args=[alice.pk]))

    assert page.status_code == 200
    assert _url(alice).encode() in page.content


def test_it_refuses_non_staff_and_changes_nothing(alice_client, alice, bob) -> None:
    before = _balance(bob)

    page = alice_client.get(_url(bob))
    post = alice_client.post(
        _url(bob), {"user": bob.pk, "amount": "50", "reason": "me", "token": "x", "confirm": "1"}
    )

    # The admin sends non-staff to its login page.
    assert page.status_code == post.status_code == 302
    assert reverse("admin:login") in post.url
    assert _balance(bob) == before
    assert not LedgerEntry.objects.filter(kind="admin_adjustment").exists()


def test_it_refuses_staff_without_the_adjust_permission(clerk_client, alice) -> None:
    before = _balance(alice)

    page = clerk_client.get(_url(alice))
    post = clerk_client.post(
        _url(alice), {"user": alice.pk, "amount": "50", "reason": "x", "token": "x", "confirm": "1"}
    )
    action = clerk_client.post(
        reverse("admin:accounts_user_changelist"), action_post("adjust_credits", alice.pk)
    )
    user_page = clerk_client.get(reverse("admin:accounts_user_change", args=[alice.pk]))

    assert page.status_code == post.status_code == 403
    # The action is not offered to them, so the list answers "no action selected" and stays put.
    assert action.status_code in (200, 302)
    assert "adjust-credits" not in action.get("Location", "")
    assert _url(alice).encode() not in user_page.content
    assert _balance(alice) == before
    assert not LedgerEntry.objects.filter(kind="admin_adjustment").exists()


def test_it_lets_staff_with_the_adjust_permission_adjust(clerk, clerk_client, alice) -> None:
    clerk.user_permissions.add(Permission.objects.get(codename="adjust_credits"))
    before = _balance(alice)

    response = _confirm(clerk_client, [alice], "2")

    assert response.status_code == 302
    assert _balance(alice) == before + 2
    assert LedgerEntry.objects.get(user=alice, kind="admin_adjustment").actor == clerk


def test_it_sends_back_to_the_list_when_no_valid_user_is_selected(staff_client) -> None:
    for query in ("", "?user=abc", "?user=999999"):
        response = staff_client.get(reverse("admin:accounts_user_adjust_credits") + query)
        assert response.status_code == 302
        assert response.url == reverse("admin:accounts_user_changelist")
