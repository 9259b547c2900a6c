import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class PurchaseQuerySet(models.QuerySet["Purchase"]):
    def for_user(self, user: settings.AUTH_USER_MODEL) -> "PurchaseQuerySet":
        """The user's own purchases, newest first."""
        return self.filter(user=user).order_by("-created_at")

    def needing_review(self) -> "PurchaseQuerySet":
        return self.filter(needs_review=True)


class Purchase(models.Model):
    """One attempt to buy a credit package through Stripe Checkout.

    The package is snapshotted (name, credits, price, currency, amount asked from Stripe), so a later
    price change never alters what a paid session credits or what a refund claws back.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Awaiting payment")
        PAID = "paid", _("Paid")
        FAILED = "failed", _("Failed")
        EXPIRED = "expired", _("Expired")
        PARTIALLY_REFUNDED = "partially_refunded", _("Partially refunded")
        REFUNDED = "refunded", _("Refunded")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="purchases",
        verbose_name=_("user"),
    )
    # PROTECT: a package that was ever bought is deactivated, never deleted.
    package = models.ForeignKey(
        "credits.CreditPackage",
        on_delete=models.PROTECT,
        related_name="purchases",
        verbose_name=_("package"),
    )
    package_name = models.CharField(_("package name"), max_length=100)
    credits = models.PositiveIntegerField(_("credits"))
    price = models.DecimalField(_("price"), max_digits=10, decimal_places=2)
    currency = models.CharField(_("currency"), max_length=3)
    # What we asked Stripe for, in the currency's smallest unit (cents): paid events must match it.
    amount_total = models.PositiveBigIntegerField(_("amount (smallest unit)"))
    status = models.CharField(
        _("status"), max_length=32, choices=Status.choices, default=Status.PENDING
    )
    error = models.CharField(_("error"), max_length=500, blank=True)
    stripe_session_id = models.CharField(_("Stripe Checkout Session"), max_length=255, blank=True)
    stripe_payment_intent_id = models.CharField(
        _("Stripe PaymentIntent"), max_length=255, blank=True, db_index=True
    )
    ledger_entry = models.OneToOneField(
        "credits.LedgerEntry",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="purchase",
        verbose_name=_("ledger entry"),
    )
    # Refunds made in Stripe: the cumulative refunded amount, the credits taken back and the
    # credits that could not be taken back because the balance was already spent.
    refunded_amount = models.PositiveBigIntegerField(_("refunded (smallest unit)"), default=0)
    credits_clawed_back = models.PositiveIntegerField(_("credits taken back"), default=0)
    clawback_shortfall = models.PositiveIntegerField(
        _("credits not taken back"),
        default=0,
        help_text=_("Refunded credits the user had already spent; staff decide what to do."),
    )
    needs_review = models.BooleanField(_("needs review"), default=False, db_index=True)
    review_note = models.TextField(_("review note"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    paid_at = models.DateTimeField(_("paid at"), null=True, blank=True)

    objects = PurchaseQuerySet.as_manager()

    class Meta:
        verbose_name = _("purchase")
        verbose_name_plural = _("purchases")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"], name="purchase_user_created")]
        constraints = [
            models.UniqueConstraint(
                fields=["stripe_session_id"],
                condition=~Q(stripe_session_id=""),
                name="purchase_unique_stripe_session",
            ),
            models.CheckConstraint(condition=Q(credits__gt=0), name="purchase_credits_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.package_name} ({self.credits}) · {self.user_id} · {self.status}"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING

    @property
    def badge(self) -> str:
        """The status badge style (the ``badge-*`` classes of app.css)."""
        return {
            self.Status.PENDING: "pending",
            self.Status.PAID: "success",
            self.Status.FAILED: "failed",
            self.Status.EXPIRED: "cancelled",
        }.get(self.status, "warning")

    @property
    def is_credited(self) -> bool:
        return self.ledger_entry_id is not None

    def flag_for_review(self, note: str) -> None:
        """Mark for staff attention, keeping every earlier note (the caller saves)."""
        self.needs_review = True
        self.review_note = f"{self.review_note}\n{note}".strip()


class StripeEvent(models.Model):
    """A Stripe event we processed, once: the unique event id makes redeliveries no-ops."""

    class Outcome(models.TextChoices):
        CREDITED = "credited", _("Credited")
        ALREADY_CREDITED = "already_credited", _("Already credited")
        AWAITING_PAYMENT = "awaiting_payment", _("Awaiting payment")
        REJECTED = "rejected", _("Rejected (needs review)")
        UNKNOWN_PURCHASE = "unknown_purchase", _("Unknown purchase")
        REFUND_APPLIED = "refund_applied", _("Refund applied")
        STATUS_UPDATED = "status_updated", _("Status updated")
        IGNORED = "ignored", _("Ignored")

    event_id = models.CharField(_("event id"), max_length=255, unique=True)
    type = models.CharField(_("type"), max_length=100)
    outcome = models.CharField(
        _("outcome"), max_length=32, choices=Outcome.choices, default=Outcome.IGNORED
    )
    detail = models.CharField(_("detail"), max_length=500, blank=True)
    purchase = models.ForeignKey(
        Purchase,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="stripe_events",
        verbose_name=_("purchase"),
    )
    ledger_entry = models.ForeignKey(
        "credits.LedgerEntry",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("ledger entry"),
    )
    received_at = models.DateTimeField(_("received at"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("Stripe event")
        verbose_name_plural = _("Stripe events")
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"
