from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class CreditBalance(models.Model):
    """One row per user. Locked with SELECT ... FOR UPDATE before every credit movement."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="credit_balance",
    )
    balance = models.IntegerField(_("balance"), default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("credit balance")
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="credit_balance_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.balance}"


class LedgerEntryQuerySet(models.QuerySet["LedgerEntry"]):
    def for_user(self, user: settings.AUTH_USER_MODEL) -> "LedgerEntryQuerySet":
        return self.filter(user=user).order_by("-created_at", "-id")


class LedgerEntry(models.Model):
    """An append-only record of one credit movement. Never edited, never deleted."""

    class Kind(models.TextChoices):
        SIGNUP_BONUS = "signup_bonus", _("Signup bonus")
        GENERATION_CHARGE = "generation_charge", _("Generation charge")
        GENERATION_REFUND = "generation_refund", _("Generation refund")
        ADMIN_ADJUSTMENT = "admin_adjustment", _("Admin adjustment")
        PURCHASE = "purchase", _("Purchase")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ledger_entries"
    )
    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices)
    amount = models.IntegerField(_("amount"))
    balance_after = models.IntegerField(_("balance after"))
    reason = models.CharField(_("reason"), max_length=500, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor"),
    )
    generation = models.ForeignKey(
        "generations.Generation",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_entries",
        verbose_name=_("generation"),
    )
    # The id of the outside event that caused the entry (a Stripe Checkout Session), unique per kind.
    external_ref = models.CharField(_("external reference"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)

    objects = LedgerEntryQuerySet.as_manager()

    class Meta:
        verbose_name = _("ledger entry")
        verbose_name_plural = _("ledger entries")
        ordering = ["-created_at", "-id"]
        permissions = [("adjust_credits", _("Can adjust users' credits"))]
        indexes = [models.Index(fields=["user", "-created_at"], name="ledger_user_created")]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_amount_not_zero"),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0), name="ledger_balance_after_not_negative"
            ),
            models.UniqueConstraint(
                fields=["generation"],
                condition=Q(kind="generation_charge"),
                name="ledger_one_charge_per_generation",
            ),
            models.UniqueConstraint(
                fields=["generation"],
                condition=Q(kind="generation_refund"),
                name="ledger_one_refund_per_generation",
            ),
            models.UniqueConstraint(
                fields=["user"],
                condition=Q(kind="signup_bonus"),
                name="ledger_one_signup_bonus_per_user",
            ),
            models.UniqueConstraint(
                fields=["kind", "external_ref"],
                condition=~Q(external_ref=""),
                name="ledger_unique_external_ref",
            ),
            models.CheckConstraint(
                condition=Q(
                    kind__in=["generation_charge", "generation_refund"], generation__isnull=False
                )
                | ~Q(kind__in=["generation_charge", "generation_refund"]),
                name="ledger_generation_entries_have_generation",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount:+d}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValidationError("Ledger entries are append-only and cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise ValidationError("Ledger entries are append-only and cannot be deleted.")


class CreditPackage(models.Model):
    """A bundle of credits offered for sale."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    credits = models.PositiveIntegerField(_("credits"))
    price = models.DecimalField(_("price"), max_digits=10, decimal_places=2)
    currency = models.CharField(_("currency"), max_length=3, default="USD")
    is_active = models.BooleanField(_("active"), default=True)
    position = models.PositiveIntegerField(_("position"), default=0)

    class Meta:
        verbose_name = _("credit package")
        verbose_name_plural = _("credit packages")
        ordering = ["position", "price"]
        constraints = [
            models.CheckConstraint(condition=Q(credits__gt=0), name="package_credits_positive"),
            models.CheckConstraint(condition=Q(price__gte=0), name="package_price_not_negative"),
        ]

    def __str__(self) -> str:
        return self.name
