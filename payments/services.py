"""Buying credit packages through Stripe Checkout.

Credits move only through ``credits.services``: ``purchase_credit`` (one ``purchase`` ledger entry
per Checkout Session id, enforced by a unique constraint) and ``credits_adjust`` (refund claw-backs).
Every Stripe event is recorded once by its unique id, and each purchase row is locked before it is
read, so redelivered, replayed, out-of-order or concurrent events credit and claw back at most once.
Lock order is always purchase row, then balance row.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from credits.models import LedgerEntry
from credits.services import CreditError, balance_lock, credits_adjust, purchase_credit
from payments.models import Purchase, StripeEvent
from payments.stripe_client import (
    checkout_enabled,
    checkout_session_create,
    checkout_session_retrieve,
    to_minor_units,
)

if TYPE_CHECKING:
    from accounts.models import User
    from credits.models import CreditPackage

logger = logging.getLogger("payments")

# The success page asks Stripe itself about a purchase still pending after this long (a lost or
# delayed webhook), and not more often than every REFRESH_INTERVAL.
STALE_AFTER = timedelta(seconds=20)
REFRESH_INTERVAL = timedelta(seconds=15)

CHECKOUT_COMPLETED = "checkout.session.completed"
ASYNC_PAYMENT_SUCCEEDED = "checkout.session.async_payment_succeeded"
ASYNC_PAYMENT_FAILED = "checkout.session.async_payment_failed"
CHECKOUT_EXPIRED = "checkout.session.expired"
CHARGE_REFUNDED = "charge.refunded"


class PurchaseRefused(Exception):
    """A purchase that cannot start. ``message`` is safe (and meant) to show to the user."""

    code = "purchase_refused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CheckoutDisabled(PurchaseRefused):
    code = "checkout_disabled"


class PackageUnavailable(PurchaseRefused):
    code = "package_unavailable"


class CheckoutFailed(PurchaseRefused):
    code = "checkout_failed"


class MalformedEvent(ValueError):
    """A signed event whose envelope is not a Stripe event (no id, type or data.object)."""


def _absolute(path: str) -> str:
    return f"{settings.APP_URL}{path}"


# --- Starting a purchase ----------------------------------------------------------------------


def purchase_start(*, user: User, package: CreditPackage) -> tuple[Purchase, str]:
    """Record a pending purchase and open a Stripe Checkout Session for it.

    Returns the purchase and the Checkout URL to redirect to. Raises ``PurchaseRefused`` (nothing
    charged, nothing credited): Stripe not configured, the package is not on sale, or Stripe
    could not open the session (the purchase is then kept as ``failed`` for the record).
    """
    if not checkout_enabled():
        raise CheckoutDisabled(
            _("Online payment is not available right now. Write to our team to buy credits.")
        )
    if not package.is_active:
        raise PackageUnavailable(
            _("The package “%(name)s” is no longer on sale. Please choose another one.")
            % {"name": package.name}
        )
    purchase = Purchase.objects.create(
        user=user,
        package=package,
        package_name=package.name,
        credits=package.credits,
        price=package.price,
        currency=package.currency.upper(),
        amount_total=to_minor_units(package.price, package.currency),
    )
    extra = {"purchase_id": str(purchase.pk), "user_id": user.pk, "package_id": package.pk}
    # No transaction is open here: the purchase row is committed before the HTTP call, so a
    # webhook can always find it, and no lock is held while Stripe answers.
    try:
        session = checkout_session_create(
            purchase_id=str(purchase.pk),
            user_id=user.pk,
            email=user.email,
            package_id=package.pk,
            product_name=_("%(name)s: %(credits)s credits")
            % {"name": package.name, "credits": package.credits},
            unit_amount=purchase.amount_total,
            currency=purchase.currency,
            success_url=_absolute(reverse("payments:purchase_success", args=[purchase.pk])),
            cancel_url=_absolute(reverse("payments:purchase_cancelled", args=[purchase.pk])),
        )
        session_id, url = session.get("id"), session.get("url")
    except stripe.StripeError as exc:
        logger.error(
            "Stripe refused to open a Checkout Session: %s",
            getattr(exc, "user_message", None) or str(exc),
            extra={**extra, "stripe_status": getattr(exc, "http_status", None)},
        )
        session_id = url = None
        unreachable = isinstance(exc, stripe.APIConnectionError) or (exc.http_status or 500) >= 500
    else:
        unreachable = True  # answered, but without a session: treat it as an outage
    if not isinstance(session_id, str) or not session_id or not isinstance(url, str) or not url:
        if unreachable:
            message = _(
                "We could not reach our payment provider. Nothing was charged; please try again "
                "in a few minutes."
            )
        else:
            message = _(
                "Our payment provider did not accept this payment. Nothing was charged; please "
                "write to our team so we can sort it out."
            )
        purchase.status = Purchase.Status.FAILED
        purchase.error = message
        purchase.save(update_fields=["status", "error", "updated_at"])
        raise CheckoutFailed(message)
    purchase.stripe_session_id = session_id
    purchase.save(update_fields=["stripe_session_id", "updated_at"])
    logger.info("Checkout Session opened", extra={**extra, "session_id": session_id})
    return purchase, url


# --- Applying what Stripe tells us --------------------------------------------------------------


def _id(value: object) -> str:
    """A Stripe id from a field that may hold the id or the expanded object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) else ""


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class Applied:
    """What applying one Stripe object did (recorded on the StripeEvent)."""

    outcome: str
    purchase: Purchase | None = None
    ledger_entry: LedgerEntry | None = None
    detail: str = ""


def _purchase_for_session(session_id: str, metadata: Mapping[str, Any]) -> Purchase | None:
    """The purchase a session belongs to, locked. By session id; else by our metadata, for a
    purchase whose session id was never saved (a crash or timeout right after Stripe created it)."""
    locked = Purchase.objects.select_for_update()
    if session_id:
        purchase = locked.filter(stripe_session_id=session_id).first()
        if purchase is not None:
            return purchase
    try:
        purchase_id = uuid.UUID(str(metadata.get("purchase_id", "")))
    except ValueError:
        return None
    purchase = locked.filter(pk=purchase_id, stripe_session_id="").first()
    if purchase is not None and session_id:
        purchase.stripe_session_id = session_id
    return purchase


def _session_mismatches(purchase: Purchase, session: Mapping[str, Any]) -> list[str]:
    metadata = session.get("metadata") if isinstance(session.get("metadata"), Mapping) else {}
    problems = []
    if str(metadata.get("package_id", "")) != str(purchase.package_id):
        problems.append(f"package {metadata.get('package_id')!r} is not {purchase.package_id}")
    if str(metadata.get("user_id", "")) != str(purchase.user_id) or str(
        session.get("client_reference_id", "")
    ) != str(purchase.user_id):
        problems.append(f"user {session.get('client_reference_id')!r} is not {purchase.user_id}")
    amount = _as_int(session.get("amount_total"))
    if amount != purchase.amount_total:
        problems.append(f"amount_total {amount!r} is not {purchase.amount_total}")
    currency = session.get("currency")
    if not isinstance(currency, str) or currency.lower() != purchase.currency.lower():
        problems.append(f"currency {currency!r} is not {purchase.currency.lower()!r}")
    return problems


def _checkout_session_apply(session: Mapping[str, Any], *, source: str) -> Applied:
    """Credit a paid Checkout Session once, after checking it against our purchase.

    Runs inside the caller's transaction. ``source`` (the event type, or "poll") is only logged.
    """
    session_id = _id(session.get("id"))
    metadata = session.get("metadata") if isinstance(session.get("metadata"), Mapping) else {}
    purchase = _purchase_for_session(session_id, metadata)
    extra = {
        "purchase_id": str(purchase.pk) if purchase else str(metadata.get("purchase_id", "")),
        "session_id": session_id,
        "source": source,
    }
    if purchase is None:
        logger.warning(
            "Stripe Checkout Session for an unknown purchase or package (package_id=%s): not credited",
            metadata.get("package_id"),
            extra=extra,
        )
        return Applied(StripeEvent.Outcome.UNKNOWN_PURCHASE, detail="no matching purchase")

    payment_intent = _id(session.get("payment_intent"))
    if payment_intent and not purchase.stripe_payment_intent_id:
        purchase.stripe_payment_intent_id = payment_intent
    if session.get("payment_status") != "paid":
        # A delayed method (bank debit…): checkout.session.async_payment_succeeded will follow.
        purchase.save()
        return Applied(
            StripeEvent.Outcome.AWAITING_PAYMENT, purchase, detail="payment not settled yet"
        )

    problems = _session_mismatches(purchase, session)
    if problems:
        note = "; ".join(problems)
        logger.error(
            "Stripe Checkout Session does not match the purchase, not credited: %s",
            note,
            extra=extra,
        )
        purchase.flag_for_review(
            f"{timezone.now():%Y-%m-%d %H:%M} session {session_id} not credited: {note}"
        )
        purchase.save()
        return Applied(StripeEvent.Outcome.REJECTED, purchase, detail=note[:500])

    entry = purchase_credit(
        user=purchase.user,
        amount=purchase.credits,
        reason=_("Purchase of %(name)s") % {"name": purchase.package_name},
        external_ref=session_id,
    )
    outcome = StripeEvent.Outcome.CREDITED
    if entry is None:
        outcome = StripeEvent.Outcome.ALREADY_CREDITED
        entry = LedgerEntry.objects.filter(
            kind=LedgerEntry.Kind.PURCHASE, external_ref=session_id
        ).first()
    else:
        logger.info("Purchase credited", extra={**extra, "credits": purchase.credits})
    if purchase.ledger_entry_id is None:
        purchase.ledger_entry = entry
    # Refund statuses are later than paid and stay; anything before paid moves to paid (a user
    # who paid for a session we had given up on as failed/expired still gets the credits).
    if purchase.status in (
        Purchase.Status.PENDING,
        Purchase.Status.FAILED,
        Purchase.Status.EXPIRED,
    ):
        purchase.status = Purchase.Status.PAID
        purchase.error = ""
    if purchase.paid_at is None:
        purchase.paid_at = timezone.now()
    purchase.save()
    return Applied(outcome, purchase, entry)


def _checkout_session_closed(session: Mapping[str, Any], *, status: str, error: str) -> Applied:
    """An expired session, or a delayed payment that failed: only a pending purchase changes."""
    session_id = _id(session.get("id"))
    metadata = session.get("metadata") if isinstance(session.get("metadata"), Mapping) else {}
    purchase = _purchase_for_session(session_id, metadata)
    if purchase is None:
        return Applied(StripeEvent.Outcome.UNKNOWN_PURCHASE, detail="no matching purchase")
    if purchase.status in (Purchase.Status.PENDING, Purchase.Status.FAILED):
        purchase.status = status
        purchase.error = error
        purchase.save()
        return Applied(StripeEvent.Outcome.STATUS_UPDATED, purchase, detail=status)
    return Applied(StripeEvent.Outcome.IGNORED, purchase, detail=f"already {purchase.status}")


@dataclass
class RefundResult:
    purchase: Purchase
    ledger_entry: LedgerEntry | None
    credits_taken: int
    credits_short: int


def purchase_refund_apply(*, purchase: Purchase, refunded_amount: int) -> RefundResult:
    """Reflect a refund made in Stripe: take back the refunded share of the credits, never more
    than the balance holds.

    ``refunded_amount`` is Stripe's cumulative ``amount_refunded`` (smallest unit), so applying the
    same or an older figure again takes nothing more. Credits already spent cannot be taken back:
    the shortfall is recorded and the purchase is flagged for staff review. The claw-back is a
    staff-visible ``admin_adjustment`` ledger entry with no actor.
    """
    with transaction.atomic():
        purchase = Purchase.objects.select_for_update().get(pk=purchase.pk)
        refunded = min(max(refunded_amount, purchase.refunded_amount), purchase.amount_total)
        entry = None
        taken = short = 0
        if purchase.is_credited and purchase.amount_total > 0:
            due = (
                purchase.credits
                if refunded >= purchase.amount_total
                else purchase.credits * refunded // purchase.amount_total
            )
            to_remove = due - purchase.credits_clawed_back - purchase.clawback_shortfall
            if to_remove > 0:
                # Locked here (and again, harmlessly, by credits_adjust in this same transaction)
                # so the balance read below cannot change before the adjustment.
                balance = balance_lock(user_id=purchase.user_id)
                taken = min(to_remove, balance.balance)
                if taken > 0:
                    try:
                        entry = credits_adjust(
                            user=purchase.user,
                            amount=-taken,
                            reason=_("Stripe refund of %(name)s (purchase %(ref)s)")
                            % {"name": purchase.package_name, "ref": str(purchase.pk)[:8]},
                            actor=None,
                        )
                    except CreditError as exc:
                        logger.error(
                            "Refund claw-back refused: %s",
                            exc.message,
                            extra={"purchase_id": str(purchase.pk)},
                        )
                        taken = 0
                short = to_remove - taken
                purchase.credits_clawed_back += taken
                purchase.clawback_shortfall += short
                if short:
                    logger.warning(
                        "Refund claw-back short: the balance no longer holds the refunded credits",
                        extra={
                            "purchase_id": str(purchase.pk),
                            "session_id": purchase.stripe_session_id,
                            "credits_taken": taken,
                            "credits_short": short,
                        },
                    )
                    purchase.flag_for_review(
                        f"{timezone.now():%Y-%m-%d %H:%M} refund: took back {taken} credits, "
                        f"{short} already spent (not taken back)."
                    )
        purchase.refunded_amount = refunded
        if refunded >= purchase.amount_total:
            purchase.status = Purchase.Status.REFUNDED
        elif refunded > 0:
            purchase.status = Purchase.Status.PARTIALLY_REFUNDED
        purchase.save()
    return RefundResult(purchase, entry, taken, short)


def _charge_refunded(charge: Mapping[str, Any]) -> Applied:
    payment_intent = _id(charge.get("payment_intent"))
    purchase = (
        Purchase.objects.select_for_update().filter(stripe_payment_intent_id=payment_intent).first()
        if payment_intent
        else None
    )
    extra = {
        "purchase_id": str(purchase.pk) if purchase else "",
        "session_id": purchase.stripe_session_id if purchase else "",
        "charge_id": _id(charge.get("id")),
        "payment_intent_id": payment_intent,
    }
    if purchase is None:
        logger.warning("Stripe refund of a charge we did not sell: nothing taken back", extra=extra)
        return Applied(StripeEvent.Outcome.UNKNOWN_PURCHASE, detail="no matching purchase")
    refunded = _as_int(charge.get("amount_refunded"))
    currency = charge.get("currency")
    if (
        refunded is None
        or refunded < 0
        or not isinstance(currency, str)
        or currency.lower() != purchase.currency.lower()
    ):
        note = f"refund event not understood (amount_refunded={refunded!r}, currency={currency!r})"
        logger.error("Stripe refund does not match the purchase: %s", note, extra=extra)
        purchase.flag_for_review(f"{timezone.now():%Y-%m-%d %H:%M} {note}")
        purchase.save()
        return Applied(StripeEvent.Outcome.REJECTED, purchase, detail=note)
    result = purchase_refund_apply(purchase=purchase, refunded_amount=refunded)
    return Applied(
        StripeEvent.Outcome.REFUND_APPLIED,
        result.purchase,
        result.ledger_entry,
        detail=f"taken back {result.credits_taken}, short {result.credits_short}",
    )


_HANDLERS: dict[str, Callable[[Mapping[str, Any]], Applied]] = {
    CHECKOUT_COMPLETED: lambda obj: _checkout_session_apply(obj, source=CHECKOUT_COMPLETED),
    ASYNC_PAYMENT_SUCCEEDED: lambda obj: _checkout_session_apply(
        obj, source=ASYNC_PAYMENT_SUCCEEDED
    ),
    ASYNC_PAYMENT_FAILED: lambda obj: _checkout_session_closed(
        obj,
        status=Purchase.Status.FAILED,
        error=_("Your payment did not go through. No credits were added; you can try again."),
    ),
    CHECKOUT_EXPIRED: lambda obj: _checkout_session_closed(
        obj,
        status=Purchase.Status.EXPIRED,
        error=_("The payment page expired before payment. No credits were added."),
    ),
    CHARGE_REFUNDED: _charge_refunded,
}


def stripe_event_process(*, event: Mapping[str, Any]) -> StripeEvent | None:
    """Apply one verified Stripe event, exactly once per event id.

    Returns the recorded event, or None for an event type we do not handle or an event already
    processed (a concurrent delivery of the same event waits on the unique id, then sees it).
    Raises ``MalformedEvent`` for an envelope without id, type or object.
    """
    event_id, event_type = event.get("id"), event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
        raise MalformedEvent("the event has no id or type")
    if not isinstance(obj, Mapping):
        raise MalformedEvent("the event has no data.object")
    handler = _HANDLERS.get(event_type)
    if handler is None:
        return None
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = StripeEvent.objects.create(event_id=event_id[:255], type=event_type[:100])
        except IntegrityError:
            logger.info("Stripe event already processed", extra={"event_id": event_id})
            return None
        applied = handler(obj)
        record.outcome = applied.outcome
        record.detail = applied.detail[:500]
        record.purchase = applied.purchase
        record.ledger_entry = applied.ledger_entry
        record.save(update_fields=["outcome", "detail", "purchase", "ledger_entry"])
    return record


def purchase_refresh_if_stale(*, purchase: Purchase) -> Purchase:
    """Ask Stripe about a purchase still pending well after checkout (a lost or late webhook).

    The success page calls this while it polls; what Stripe's API answers goes through exactly
    the same checks and the same once-only crediting as a webhook. Errors only leave it pending.
    """
    now = timezone.now()
    if (
        not purchase.is_pending
        or not purchase.stripe_session_id
        or not checkout_enabled()
        or now - purchase.created_at < STALE_AFTER
        or now - purchase.updated_at < REFRESH_INTERVAL
    ):
        return purchase
    # Claim the check (one poller at a time asks Stripe; the others see a fresh updated_at).
    claimed = Purchase.objects.filter(
        pk=purchase.pk, status=Purchase.Status.PENDING, updated_at=purchase.updated_at
    ).update(updated_at=now)
    if not claimed:
        purchase.refresh_from_db()
        return purchase
    try:
        session = checkout_session_retrieve(purchase.stripe_session_id)
    except stripe.StripeError as exc:
        logger.warning(
            "Could not ask Stripe about a pending purchase: %s",
            exc,
            extra={"purchase_id": str(purchase.pk), "session_id": purchase.stripe_session_id},
        )
        purchase.refresh_from_db()
        return purchase
    if session.get("id") == purchase.stripe_session_id:
        with transaction.atomic():
            if session.get("payment_status") == "paid":
                _checkout_session_apply(session, source="poll")
            elif session.get("status") == "expired":
                _checkout_session_closed(
                    session,
                    status=Purchase.Status.EXPIRED,
                    error=_("The payment page expired before payment. No credits were added."),
                )
    purchase.refresh_from_db()
    return purchase
