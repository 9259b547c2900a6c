"""The ledger (read-only for everyone, CSV export of the filtered list), credit packages, and the
numbers on the admin index (``admin_summary``)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from credits.models import CreditPackage, LedgerEntry
from generations.models import ACTIVE_STATUSES, Generation, Status

CSV_COLUMNS = (
    "id",
    "created_at",
    "user",
    "kind",
    "amount",
    "balance_after",
    "reason",
    "actor",
    "generation",
    "external_ref",
)
# Spreadsheets run cells starting with these as formulas; user-written text must stay text.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_PREFIXES) else value


class _Echo:
    """A write-only file for csv.writer that hands each line back instead of buffering it."""

    def write(self, value: str) -> str:
        return value


def ledger_csv_rows(entries: Iterable[LedgerEntry]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for e in entries:
        yield writer.writerow(
            [
                e.pk,
                e.created_at.isoformat(),
                _csv_text(e.user.email),
                e.kind,
                e.amount,
                e.balance_after,
                _csv_text(e.reason),
                _csv_text(e.actor.email) if e.actor_id else "",
                str(e.generation_id or ""),
                _csv_text(e.external_ref),
            ]
        )


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    """History is never rewritten: no add, change or delete here, not even for superusers
    (PostgreSQL refuses it too, with a trigger)."""

    list_display = (
        "created_at",
        "user_link",
        "kind",
        "signed_amount",
        "balance_after",
        "reason",
        "generation_link",
        "actor_link",
    )
    list_filter = (
        "kind",
        ("created_at", admin.DateFieldListFilter),
        ("actor", admin.EmptyFieldListFilter),
    )
    search_fields = ("user__email",)
    search_help_text = _("Search by the user's email address.")
    list_select_related = ("user", "actor", "generation")
    ordering = ("-created_at", "-id")
    show_full_result_count = False
    fields = (
        "created_at",
        "user_link",
        "kind",
        "signed_amount",
        "balance_after",
        "reason",
        "actor_link",
        "generation_link",
        "external_ref",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "export.csv",
                self.admin_site.admin_view(self.export_csv_view),
                name="credits_ledgerentry_export",
            ),
            *super().get_urls(),
        ]

    def export_csv_view(self, request: HttpRequest) -> HttpResponse:
        """The changelist's own filtered, searched, ordered queryset, streamed as CSV."""
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            messages.error(request, _("Those filters are not valid; nothing was exported."))
            return HttpResponseRedirect(reverse("admin:credits_ledgerentry_changelist"))
        entries = changelist.queryset.select_related("user", "actor").iterator(chunk_size=2000)
        stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
        return StreamingHttpResponse(
            ledger_csv_rows(entries),
            content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="ledger-{stamp}.csv"'},
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict | None = None
    ) -> HttpResponse:
        extra_context = extra_context or {}
        extra_context["export_url"] = reverse("admin:credits_ledgerentry_export")
        return super().changelist_view(request, extra_context)

    @admin.display(description=_("user"), ordering="user__email")
    def user_link(self, obj: LedgerEntry) -> str:
        url = reverse("admin:accounts_user_change", args=[obj.user_id])
        return format_html('<a href="{}">{}</a>', url, obj.user.email)

    @admin.display(description=_("actor"), ordering="actor__email")
    def actor_link(self, obj: LedgerEntry) -> str:
        if obj.actor_id is None:
            return "—"
        url = reverse("admin:accounts_user_change", args=[obj.actor_id])
        return format_html('<a href="{}">{}</a>', url, obj.actor.email)

    @admin.display(description=_("generation"))
    def generation_link(self, obj: LedgerEntry) -> str:
        if obj.generation_id is None:
            return "—"
        url = reverse("admin:generations_generation_change", args=[obj.generation_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.generation_id)[:8])

    @admin.display(description=_("amount"), ordering="amount")
    def signed_amount(self, obj: LedgerEntry) -> str:
        return f"{obj.amount:+d}"


@admin.register(CreditPackage)
class CreditPackageAdmin(admin.ModelAdmin):
    list_display = ("name", "credits", "price", "currency", "is_active", "position")
    list_editable = ("is_active", "position")
    list_filter = ("is_active",)
    search_fields = ("name",)
    ordering = ("position", "price")


# --- The admin index summary --------------------------------------------------------------------


def _start_of_today() -> datetime:
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)


def stuck_generations(*, now: datetime | None = None) -> QuerySet[Generation]:
    """Active runs not heard from upstream for RUN_STALE_AFTER_SECONDS (or never, if older)."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS)
    return Generation.objects.filter(status__in=ACTIVE_STATUSES).filter(
        Q(last_synced_at__lt=cutoff) | Q(last_synced_at__isnull=True, created_at__lt=cutoff)
    )


def admin_summary() -> dict[str, Any]:
    """The business at a glance, in four queries."""
    kind = LedgerEntry.Kind
    zero = 0
    totals = LedgerEntry.objects.aggregate(
        sold=Coalesce(Sum("amount", filter=Q(kind=kind.PURCHASE)), zero),
        bonus=Coalesce(Sum("amount", filter=Q(kind=kind.SIGNUP_BONUS)), zero),
        added=Coalesce(Sum("amount", filter=Q(kind=kind.ADMIN_ADJUSTMENT, amount__gt=0)), zero),
        removed=Coalesce(Sum("amount", filter=Q(kind=kind.ADMIN_ADJUSTMENT, amount__lt=0)), zero),
        charged=Coalesce(Sum("amount", filter=Q(kind=kind.GENERATION_CHARGE)), zero),
        refunded=Coalesce(Sum("amount", filter=Q(kind=kind.GENERATION_REFUND)), zero),
    )
    by_status = dict(
        Generation.objects.filter(created_at__gte=_start_of_today())
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    generations_url = reverse("admin:generations_generation_changelist")
    today = _start_of_today().date()
    today_range = {"created_at__gte": str(today), "created_at__lt": str(today + timedelta(days=1))}
    return {
        "users": User.objects.count(),
        "credits_sold": totals["sold"],
        "credits_granted": totals["bonus"] + totals["added"],
        "credits_removed": -totals["removed"],
        # Charges are negative entries and refunds positive ones: what was kept is their sum.
        "credits_spent": -(totals["charged"] + totals["refunded"]),
        "credits_refunded": totals["refunded"],
        "runs_today": [
            {
                "status": value,
                "label": label,
                "count": by_status.get(value, 0),
                "url": f"{generations_url}?{urlencode({'status__exact': value, **today_range})}",
            }
            for value, label in Status.choices
        ],
        "runs_today_total": sum(by_status.values()),
        "stuck_runs": stuck_generations().count(),
        "stuck_url": f"{generations_url}?stuck=yes",
        "stale_after_seconds": settings.RUN_STALE_AFTER_SECONDS,
    }
