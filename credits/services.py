"""The only code that moves credits.

Every function is one ``transaction.atomic`` block that locks the user's balance row first
(``SELECT ... FOR UPDATE``; on SQLite the transaction is IMMEDIATE, which serialises writers the
same way), then checks, then writes the balance and exactly one ledger entry. The database has
the last word: ``CHECK (balance >= 0)`` and the ledger's unique constraints (one charge and one
refund per generation, one signup bonus per user, one entry per outside reference).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from credits.models import CreditBalance, LedgerEntry

if TYPE_CHECKING:
    from accounts.models import User
    from generations.models import Generation


class CreditError(Exception):
    """A credit movement that was refused. ``message`` is safe to show to the user."""

    code = "credit_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InsufficientCredits(CreditError):
    code = "insufficient_credits"


class InvalidAdjustment(CreditError):
    code = "invalid_adjustment"


def balance_lock(*, user_id: int) -> CreditBalance:
    """Lock and return the user's balance row (inside the caller's transaction)."""
    try:
        return CreditBalance.objects.select_for_update().get(user_id=user_id)
    except CreditBalance.DoesNotExist:
        # Accounts created before the balance table existed (or by raw SQL) get one now.
        CreditBalance.objects.get_or_create(user_id=user_id)
        return CreditBalance.objects.select_for_update().get(user_id=user_id)


def balance_get(*, user: User) -> int:
    """The user's current balance (0 for a user without a balance row)."""
    return CreditBalance.objects.filter(user=user).values_list("balance", flat=True).first() or 0


def _record(
    *,
    balance: CreditBalance,
    amount: int,
    kind: str,
    reason: str = "",
    actor: User | None = None,
    generation: Generation | None = None,
    external_ref: str = "",
) -> LedgerEntry:
    # The caller holds the row lock, so computing the new balance in Python is race-free;
    # the CHECK constraint still refuses a negative result if a bug ever gets this far.
    balance.balance += amount
    CreditBalance.objects.filter(pk=balance.pk).update(
        balance=balance.balance, updated_at=timezone.now()
    )
    return LedgerEntry.objects.create(
        user_id=balance.user_id,
        kind=kind,
        amount=amount,
        balance_after=balance.balance,
        reason=reason,
        actor=actor,
        generation=generation,
        external_ref=external_ref,
    )


def signup_bonus_grant(*, user: User) -> LedgerEntry | None:
    """Give a new account its starter credits, once. Returns None when there is nothing to give."""
    amount = settings.SIGNUP_BONUS_CREDITS
    with transaction.atomic():
        CreditBalance.objects.get_or_create(user=user)
        if amount <= 0:
            return None
        balance = balance_lock(user_id=user.pk)
        if LedgerEntry.objects.filter(user=user, kind=LedgerEntry.Kind.SIGNUP_BONUS).exists():
            return None
        return _record(
            balance=balance,
            amount=amount,
            kind=LedgerEntry.Kind.SIGNUP_BONUS,
            reason=_("Welcome bonus"),
        )


def _ensure_affordable(*, balance: CreditBalance, generation: Generation) -> None:
    if balance.balance < generation.cost:
        raise InsufficientCredits(
            _("This generation costs %(cost)d credits and your balance is %(balance)d.")
            % {"cost": generation.cost, "balance": balance.balance}
        )


def generation_charge(
    *, generation: Generation, balance: CreditBalance | None = None
) -> LedgerEntry:
    """Take the generation's cost from its owner. Raises InsufficientCredits when short.

    ``balance`` may be the row the caller already locked in this transaction: then the charge
    skips the lock query and the savepoint (two round trips on the generate hot path). The
    refusal is raised before entering any atomic block, so a caller that catches it keeps a
    usable transaction either way.
    """
    if balance is not None:
        _ensure_affordable(balance=balance, generation=generation)
        with transaction.atomic(savepoint=False):
            return _charge(balance=balance, generation=generation)
    with transaction.atomic():
        balance = balance_lock(user_id=generation.user_id)
        _ensure_affordable(balance=balance, generation=generation)
        return _charge(balance=balance, generation=generation)


def _charge(*, balance: CreditBalance, generation: Generation) -> LedgerEntry:
    return _record(
        balance=balance,
        amount=-generation.cost,
        kind=LedgerEntry.Kind.GENERATION_CHARGE,
        reason=_("Generation with %(workflow)s") % {"workflow": generation.workflow.name},
        generation=generation,
    )


def generation_refund(*, generation: Generation, reason: str = "") -> LedgerEntry | None:
    """Give back what the generation was charged, exactly once. Returns None if already refunded
    (or never charged): calling it again, concurrently or later, moves no credits."""
    with transaction.atomic():
        balance = balance_lock(user_id=generation.user_id)
        entries = {
            kind: amount
            for kind, amount in LedgerEntry.objects.filter(
                generation=generation,
                kind__in=[LedgerEntry.Kind.GENERATION_CHARGE, LedgerEntry.Kind.GENERATION_REFUND],
            ).values_list("kind", "amount")
        }
        charged = entries.get(LedgerEntry.Kind.GENERATION_CHARGE)
        if charged is None or LedgerEntry.Kind.GENERATION_REFUND in entries:
            return None
        try:
            with transaction.atomic():
                return _record(
                    balance=balance,
                    amount=-charged,
                    kind=LedgerEntry.Kind.GENERATION_REFUND,
                    reason=reason or _("Refund for a generation that did not complete"),
                    generation=generation,
                )
        except IntegrityError:
            # The unique constraint caught a second refund that slipped past the check above.
            balance.refresh_from_db()
            return None


# The balance and ledger columns are PostgreSQL ``integer``: a larger balance would be a
# database error (a 500) instead of a clear refusal.
MAX_BALANCE = 2_147_483_647


def _whole_number(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    # ASCII digits only (``\d`` would also take other scripts' digits); any length, so a huge
    # number is refused by the range check below with a message that says so.
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,1000}", value.strip()):
        return int(value.strip())
    raise InvalidAdjustment(_("The amount must be a whole number of credits, like 10 or -5."))


def credits_adjust(*, user: User, amount: object, reason: str, actor: User | None) -> LedgerEntry:
    """A staff correction: a signed, non-zero whole number of credits with a reason.

    Refuses (InvalidAdjustment, nothing written) a zero, non-integer or out-of-range amount, a
    missing reason, and anything that would take the balance below zero.
    """
    limit = settings.MAX_ADJUSTMENT_CREDITS
    amount = _whole_number(amount)
    if amount == 0:
        raise InvalidAdjustment(_("The amount cannot be zero."))
    if abs(amount) > limit:
        raise InvalidAdjustment(
            _("An adjustment is limited to %(limit)s credits either way.") % {"limit": f"{limit:,}"}
        )
    reason = (reason or "").strip()
    if not reason:
        raise InvalidAdjustment(_("A reason is required: it is recorded in the ledger."))
    if len(reason) > 500:
        raise InvalidAdjustment(_("The reason is limited to 500 characters."))
    with transaction.atomic():
        balance = balance_lock(user_id=user.pk)
        if balance.balance + amount < 0:
            raise InvalidAdjustment(
                _(
                    "%(email)s has %(balance)d credits; removing %(amount)d would leave a negative balance."
                )
                % {"email": user.email, "balance": balance.balance, "amount": -amount}
            )
        if balance.balance + amount > MAX_BALANCE:
            raise InvalidAdjustment(
                _(
                    "%(email)s has %(balance)d credits; adding %(amount)d would pass the largest "
                    "possible balance (%(max)s)."
                )
                % {
                    "email": user.email,
                    "balance": balance.balance,
                    "amount": amount,
                    "max": f"{MAX_BALANCE:,}",
                }
            )
        return _record(
            balance=balance,
            amount=amount,
            kind=LedgerEntry.Kind.ADMIN_ADJUSTMENT,
            reason=reason,
            actor=actor,
        )


def purchase_credit(
    *, user: User, amount: int, reason: str, external_ref: str
) -> LedgerEntry | None:
    """Credit a paid purchase once per ``external_ref`` (e.g. a Stripe Checkout Session id).
    Returns None when that reference was already credited."""
    if amount <= 0:
        raise CreditError(_("A purchase must add a positive number of credits."))
    if not external_ref:
        raise CreditError(_("A purchase needs the payment's reference."))
    with transaction.atomic():
        balance = balance_lock(user_id=user.pk)
        if LedgerEntry.objects.filter(
            kind=LedgerEntry.Kind.PURCHASE, external_ref=external_ref
        ).exists():
            return None
        if balance.balance + amount > MAX_BALANCE:
            raise CreditError(_("This purchase would pass the largest possible balance."))
        try:
            with transaction.atomic():
                return _record(
                    balance=balance,
                    amount=amount,
                    kind=LedgerEntry.Kind.PURCHASE,
                    reason=reason,
                    external_ref=external_ref,
                )
        except IntegrityError:
            balance.refresh_from_db()
            return None
