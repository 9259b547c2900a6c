"""Purchases and Stripe events for staff: read-only money, filters by status, and the purchases a
refund or a mismatched payment flagged for review."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from payments.models import Purchase, StripeEvent


class StripeEventInline(admin.TabularInline):
    model = StripeEvent
    fields = ("received_at", "type", "event_id", "outcome", "detail", "ledger_entry")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Purchase | None = None) -> bool:
        return False


@admin.register(Purchase)
class PurchaseAdmin(admin.ModelAdmin):
    """Everything about the money is what Stripe and the ledger said: read-only. Staff only
    clear the review flag (and may add to the note) once they have dealt with a purchase."""

    list_display = (
        "created_at",
        "user",
        "package_name",
        "credits",
        "price",
        "currency",
        "status",
        "credits_clawed_back",
        "clawback_shortfall",
        "needs_review",
    )
    list_filter = ("needs_review", "status", "currency")
    search_fields = ("user__email", "stripe_session_id", "stripe_payment_intent_id")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    ordering = ("-created_at",)
    fields = (
        "id",
        "user",
        "package",
        "package_name",
        "credits",
        "price",
        "currency",
        "amount_total",
        "status",
        "error",
        "stripe_session_id",
        "stripe_payment_intent_id",
        "ledger_entry",
        "refunded_amount",
        "credits_clawed_back",
        "clawback_shortfall",
        "needs_review",
        "review_note",
        "created_at",
        "updated_at",
        "paid_at",
    )
    readonly_fields = tuple(f for f in fields if f not in ("needs_review", "review_note"))
    inlines = (StripeEventInline,)
    actions = ("mark_reviewed",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # purchases start at the Buy button, never by hand

    def has_delete_permission(self, request: HttpRequest, obj: Purchase | None = None) -> bool:
        return False

    @admin.action(description=_("Mark the selected purchases as reviewed"), permissions=["change"])
    def mark_reviewed(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> None:
        count = queryset.filter(needs_review=True).update(needs_review=False)
        self.message_user(
            request,
            ngettext(
                "%(count)d purchase marked as reviewed.",
                "%(count)d purchases marked as reviewed.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    """Every Stripe event applied, once each: the audit trail of the webhook."""

    list_display = ("received_at", "type", "event_id", "outcome", "purchase")
    list_filter = ("outcome", "type")
    search_fields = ("event_id", "purchase__stripe_session_id", "purchase__user__email")
    readonly_fields = (
        "event_id",
        "type",
        "outcome",
        "detail",
        "purchase",
        "ledger_entry",
        "received_at",
    )
    list_select_related = ("purchase",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: StripeEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: StripeEvent | None = None) -> bool:
        return False
