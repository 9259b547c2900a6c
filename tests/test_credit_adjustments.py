"""Staff adjustments (credits.services.credits_adjust): every bad request is refused, clearly,
and leaves no trace in the ledger; good ones are recorded with their reason and actor."""

import pytest
from django.db.models import Sum

from credits.models import CreditBalance, LedgerEntry
from credits.services import InvalidAdjustment, credits_adjust


def _balance(user) -> int:
    return CreditBalance.objects.get(user=user).balance


def _assert_refused(user, *, amount: object, reason: object, mentions: str, actor=None) -> None:
    entries_before = LedgerEntry.objects.count()
    balance_before = _balance(user)

    with pytest.raises(InvalidAdjustment) as refused:
        credits_adjust(user=user, amount=amount, reason=reason, actor=actor)

    assert refused.value.code == "invalid_adjustment"
    assert mentions in refused.value.message
    assert LedgerEntry.objects.count() == entries_before
    assert _balance(user) == balance_before


@pytest.mark.django_db
@pytest.mark.parametrize("amount", [0, "0", "+0", "-0", " 0 "])
def test_it_refuses_a_zero_adjustment(alice, staff, amount: object) -> None:
    _assert_refused(alice, amount=amount, reason="typo", actor=staff, mentions="cannot be zero")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "amount",
    [
        "1.5",
        "abc",
        "",
        "   ",
        "1e3",
        "10 credits",
        "0x10",
        "1_000",
        "٣",  # a non-ASCII digit
        1.5,
        2.0,
        True,
        False,
        None,
        [5],
    ],
)
def test_it_refuses_an_amount_that_is_not_a_whole_number(alice, staff, amount: object) -> None:
    _assert_refused(alice, amount=amount, reason="goodwill", actor=staff, mentions="whole number")


@pytest.mark.django_db
def test_it_refuses_to_take_the_balance_below_zero(alice, staff) -> None:
    _assert_refused(alice, amount=-6, reason="chargeback", actor=staff, mentions="negative balance")
    _assert_refused(
        alice, amount="-6", reason="chargeback", actor=staff, mentions="alice@example.com"
    )


@pytest.mark.django_db
def test_it_allows_taking_the_balance_to_exactly_zero(alice, staff) -> None:
    entry = credits_adjust(user=alice, amount=-5, reason="chargeback", actor=staff)

    assert entry.balance_after == 0
    assert _balance(alice) == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "amount", [1_000_001, -1_000_001, "1000001", "999999999999999", "9" * 40, 10**40]
)
def test_it_refuses_a_huge_adjustment(alice, staff, amount: object) -> None:
    _assert_refused(alice, amount=amount, reason="extra zeros", actor=staff, mentions="limited to")


@pytest.mark.django_db
def test_it_names_the_limit_when_refusing_a_huge_adjustment(alice, staff, settings) -> None:
    settings.MAX_ADJUSTMENT_CREDITS = 500
    _assert_refused(alice, amount=501, reason="extra zeros", actor=staff, mentions="500")
    assert credits_adjust(user=alice, amount=500, reason="at the limit", actor=staff).amount == 500


@pytest.mark.django_db
def test_it_allows_the_largest_adjustment(alice, staff, settings) -> None:
    entry = credits_adjust(
        user=alice, amount=settings.MAX_ADJUSTMENT_CREDITS, reason="big customer", actor=staff
    )

    assert entry.amount == settings.MAX_ADJUSTMENT_CREDITS
    assert _balance(alice) == settings.MAX_ADJUSTMENT_CREDITS + 5


@pytest.mark.django_db
def test_it_refuses_an_adjustment_that_would_overflow_the_balance(alice, staff, settings) -> None:
    # An operator may raise the limit; the balance column still has a ceiling (PostgreSQL
    # integer), and crossing it must be a clear refusal, not a database error (a 500).
    settings.MAX_ADJUSTMENT_CREDITS = 10**12
    credits_adjust(user=alice, amount=2_000_000_000, reason="enterprise deal", actor=staff)

    _assert_refused(alice, amount=200_000_000, reason="one more", actor=staff, mentions="largest")
    _assert_refused(alice, amount=10**11, reason="typo", actor=staff, mentions="largest")


@pytest.mark.django_db
@pytest.mark.parametrize("reason", [None, "", "   ", "\n\t"])
def test_it_refuses_an_adjustment_without_a_reason(alice, staff, reason: object) -> None:
    _assert_refused(alice, amount=10, reason=reason, actor=staff, mentions="reason is required")


@pytest.mark.django_db
def test_it_refuses_an_overlong_reason(alice, staff) -> None:
    _assert_refused(alice, amount=10, reason="x" * 501, actor=staff, mentions="500 characters")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "expected"), [(10, 10), ("10", 10), ("+7", 7), (" -3 ", -3), (-1, -1)]
)
def test_it_records_a_valid_adjustment_with_its_reason_and_actor(
    alice, staff, amount: object, expected: int
) -> None:
    entry = credits_adjust(
        user=alice, amount=amount, reason="  goodwill for ticket 42 ", actor=staff
    )

    assert entry.kind == LedgerEntry.Kind.ADMIN_ADJUSTMENT
    assert entry.amount == expected
    assert entry.balance_after == 5 + expected == _balance(alice)
    assert entry.reason == "goodwill for ticket 42"
    assert entry.actor == staff
    assert entry.user == alice
    total = LedgerEntry.objects.filter(user=alice).aggregate(total=Sum("amount"))["total"]
    assert total == _balance(alice)


@pytest.mark.django_db
def test_it_only_touches_the_adjusted_user(alice, bob, staff) -> None:
    credits_adjust(user=alice, amount=20, reason="goodwill", actor=staff)

    assert _balance(alice) == 25
    assert _balance(bob) == 5
    assert not LedgerEntry.objects.filter(user=bob, kind=LedgerEntry.Kind.ADMIN_ADJUSTMENT).exists()
