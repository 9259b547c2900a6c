"""The database itself keeps the money rules on PostgreSQL: ledger entries cannot be edited or
deleted (a trigger), and no balance or entry can go negative (CHECK constraints), whatever code
or SQL session tries."""

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, connection, transaction

from credits.models import CreditBalance, LedgerEntry

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the append-only trigger is PostgreSQL's"
)


def _raw(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.fixture
def bonus(alice) -> LedgerEntry:
    return LedgerEntry.objects.get(user=alice, kind=LedgerEntry.Kind.SIGNUP_BONUS)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE credits_ledgerentry SET amount = 500 WHERE id = %s",
        "UPDATE credits_ledgerentry SET reason = 'rewritten' WHERE id = %s",
        "DELETE FROM credits_ledgerentry WHERE id = %s",
    ],
)
def test_it_refuses_raw_sql_that_edits_or_deletes_an_entry(bonus, sql: str) -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _raw(sql, [bonus.pk])

    bonus.refresh_from_db()
    assert (bonus.amount, bonus.reason) == (5, "Welcome bonus")


@pytest.mark.django_db
def test_it_refuses_orm_bulk_updates_and_deletes(bonus) -> None:
    entries = LedgerEntry.objects.filter(pk=bonus.pk)

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        entries.update(amount=500)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        entries.delete()

    assert LedgerEntry.objects.get(pk=bonus.pk).amount == 5


@pytest.mark.django_db
def test_it_refuses_saving_or_deleting_an_entry_instance(bonus) -> None:
    bonus.amount = 500
    with pytest.raises(ValidationError):
        bonus.save()
    with pytest.raises(ValidationError):
        bonus.delete()

    assert LedgerEntry.objects.get(pk=bonus.pk).amount == 5


@pytest.mark.django_db
def test_it_refuses_deleting_a_user_who_has_ledger_entries(alice) -> None:
    with pytest.raises(DatabaseError), transaction.atomic():
        alice.delete()

    assert LedgerEntry.objects.filter(user=alice).count() == 1


@pytest.mark.django_db
def test_it_refuses_a_negative_balance_by_raw_sql(alice) -> None:
    with pytest.raises(IntegrityError, match="credit_balance_not_negative"), transaction.atomic():
        _raw("UPDATE credits_creditbalance SET balance = -1 WHERE user_id = %s", [alice.pk])
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditBalance.objects.filter(user=alice).update(balance=-10)

    assert CreditBalance.objects.get(user=alice).balance == 5


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "amount", "balance_after", "constraint"),
    [
        ("admin_adjustment", 0, 5, "ledger_amount_not_zero"),
        ("admin_adjustment", -10, -5, "ledger_balance_after_not_negative"),
        ("generation_charge", -2, 3, "ledger_generation_entries_have_generation"),
        ("signup_bonus", 5, 10, "ledger_one_signup_bonus_per_user"),
    ],
)
def test_it_refuses_impossible_entries_by_raw_sql(
    alice, kind: str, amount: int, balance_after: int, constraint: str
) -> None:
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        _raw(
            "INSERT INTO credits_ledgerentry"
            " (user_id, kind, amount, balance_after, reason, external_ref, created_at)"
            " VALUES (%s, %s, %s, %s, '', '', now())",
            [alice.pk, kind, amount, balance_after],
        )

    assert LedgerEntry.objects.filter(user=alice).count() == 1
