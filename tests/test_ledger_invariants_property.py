"""Property: whatever sequence of bonus / charge / refund / adjustment / purchase happens, the
ledger stays sound — balance >= 0, balance == sum of entries, at most one charge and one refund
per generation — and every service agrees with a tiny reference model of the money rules."""

from dataclasses import dataclass, field

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credits.models import CreditBalance, LedgerEntry
from credits.services import (
    InsufficientCredits,
    InvalidAdjustment,
    credits_adjust,
    generation_charge,
    generation_refund,
    purchase_credit,
    signup_bonus_grant,
)
from generations.models import Generation
from workflows.models import Workflow

USERS = ("alice@example.com", "bob@example.com")

who = st.integers(min_value=0, max_value=len(USERS) - 1)
ops = st.one_of(
    st.tuples(st.just("bonus"), who, st.integers(min_value=0, max_value=10)),
    st.tuples(st.just("charge"), who, st.integers(min_value=1, max_value=6)),
    # Index into the generations created so far: charging one twice must be impossible.
    st.tuples(st.just("recharge"), st.integers(min_value=0, max_value=30)),
    st.tuples(st.just("refund"), st.integers(min_value=0, max_value=30)),
    st.tuples(
        st.just("adjust"),
        who,
        st.one_of(
            st.integers(min_value=-15, max_value=15), st.sampled_from(["3", "-2", "1.5", "x"])
        ),
    ),
    st.tuples(
        st.just("purchase"), who, st.integers(min_value=1, max_value=20), st.sampled_from("abc")
    ),
)


@dataclass
class Model:
    """What the money rules say should happen, in plain Python."""

    balances: list[int] = field(default_factory=lambda: [0] * len(USERS))
    bonus_given: list[bool] = field(default_factory=lambda: [False] * len(USERS))
    charged: dict[object, int] = field(default_factory=dict)
    refunded: set = field(default_factory=set)
    refs: set = field(default_factory=set)


def _apply(op: tuple, users: list, generations: list, workflow: Workflow, model: Model) -> None:
    kind = op[0]
    if kind == "bonus":
        _, i, amount = op
        with override_settings(SIGNUP_BONUS_CREDITS=amount):
            entry = signup_bonus_grant(user=users[i])
        if amount > 0 and not model.bonus_given[i]:
            assert entry is not None and entry.amount == amount
            model.bonus_given[i] = True
            model.balances[i] += amount
        else:
            assert entry is None
    elif kind == "charge":
        _, i, cost = op
        generation = Generation.objects.create(
            user=users[i], workflow=workflow, cost=cost, inputs={}
        )
        generations.append(generation)
        _charge(generation, users.index(generation.user), model)
    elif kind == "recharge":
        if not generations:
            return
        generation = generations[op[1] % len(generations)]
        i = users.index(generation.user)
        if generation.pk in model.charged:
            # Refused either way: by the balance check when short, else by the database.
            with pytest.raises((IntegrityError, InsufficientCredits)), transaction.atomic():
                generation_charge(generation=generation)
        else:
            _charge(generation, i, model)
    elif kind == "refund":
        if not generations:
            return
        generation = generations[op[1] % len(generations)]
        i = users.index(generation.user)
        entry = generation_refund(generation=generation)
        if generation.pk in model.charged and generation.pk not in model.refunded:
            assert entry is not None and entry.amount == model.charged[generation.pk]
            model.refunded.add(generation.pk)
            model.balances[i] += entry.amount
        else:
            assert entry is None
    elif kind == "adjust":
        _, i, amount = op
        valid = isinstance(amount, int) or amount.lstrip("-").isdigit()
        number = int(amount) if valid else 0
        if number == 0 or model.balances[i] + number < 0:
            with pytest.raises(InvalidAdjustment):
                credits_adjust(user=users[i], amount=amount, reason="property test", actor=None)
        else:
            credits_adjust(user=users[i], amount=amount, reason="property test", actor=None)
            model.balances[i] += number
    elif kind == "purchase":
        _, i, amount, ref = op
        entry = purchase_credit(user=users[i], amount=amount, reason="package", external_ref=ref)
        if ref in model.refs:
            assert entry is None
        else:
            assert entry is not None
            model.refs.add(ref)
            model.balances[i] += amount


def _charge(generation: Generation, i: int, model: Model) -> None:
    if model.balances[i] >= generation.cost:
        generation_charge(generation=generation)
        model.charged[generation.pk] = generation.cost
        model.balances[i] -= generation.cost
    else:
        with pytest.raises(InsufficientCredits):
            generation_charge(generation=generation)


def _assert_balances(users: list, model: Model) -> None:
    """After every movement (one query): balance >= 0, == sum of entries, == the last entry's
    balance_after, == what the reference model expects."""
    entries = LedgerEntry.objects.filter(user=OuterRef("user")).order_by()
    rows = {
        user_id: (balance, total or 0, last or 0)
        for user_id, balance, total, last in CreditBalance.objects.filter(user__in=users)
        .annotate(
            total=Subquery(entries.values("user").annotate(t=Sum("amount")).values("t")),
            last=Subquery(entries.order_by("-id").values("balance_after")[:1]),
        )
        .values_list("user_id", "balance", "total", "last")
    }
    for i, user in enumerate(users):
        balance, total, last = rows[user.pk]
        assert balance >= 0
        assert balance == total == last == model.balances[i]


def _assert_generations(users: list) -> None:
    """At the end: at most one charge and one refund per generation, each consistent."""
    per_generation = Generation.objects.filter(user__in=users).annotate(
        charges=Count("ledger_entries", filter=Q(ledger_entries__kind="generation_charge")),
        refunds=Count("ledger_entries", filter=Q(ledger_entries__kind="generation_refund")),
        net=Sum("ledger_entries__amount"),
    )
    for generation in per_generation:
        assert generation.charges <= 1
        assert generation.refunds <= generation.charges
        # A refunded generation cost nothing in the end; a charged one cost exactly its price.
        expected = 0 if generation.refunds or not generation.charges else -generation.cost
        assert (generation.net or 0) == expected
    assert not LedgerEntry.objects.filter(user__in=users, balance_after__lt=0).exists()


@pytest.mark.django_db
def test_it_keeps_the_ledger_invariants_for_any_sequence_of_movements() -> None:
    workflow = Workflow.objects.create(
        name="Text to image", slug="t2i", deployment_id="test-deployment", cost=1
    )

    @settings(
        max_examples=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(st.lists(ops, min_size=1, max_size=25))
    def run(sequence: list[tuple]) -> None:
        # Each example starts from fresh users and is rolled back afterwards.
        with transaction.atomic():
            with override_settings(SIGNUP_BONUS_CREDITS=0):
                users = [
                    get_user_model().objects.create_user(email=email, password=None)
                    for email in USERS
                ]
            model = Model()
            generations: list[Generation] = []
            for op in sequence:
                _apply(op, users, generations, workflow, model)
                _assert_balances(users, model)
            _assert_generations(users)
            transaction.set_rollback(True)

    run()
