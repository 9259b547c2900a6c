"""Generations in the back office: read-only runs with their inputs, outputs and status history,
and two operator actions that go through the generation services (never edit a run by hand)."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import ActionLocation
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from generations.models import ACTIVE_STATUSES, Generation, GenerationEvent, Status
from generations.services import generation_cancel, generation_recheck

BOTH = [ActionLocation.CHANGE_LIST, ActionLocation.CHANGE_FORM]
OPERATE_PERMISSION = "generations.change_generation"


def _safe_url(url: object) -> str | None:
    """Only web URLs become links or images: an upstream ``javascript:`` URL stays text."""
    if not isinstance(url, str):
        return None
    return url if urlsplit(url).scheme in ("http", "https") else None


class StuckFilter(admin.SimpleListFilter):
    title = gettext_lazy("stuck")
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            (
                "yes",
                _("Active, not heard from upstream for over %(s)d s")
                % {"s": settings.RUN_STALE_AFTER_SECONDS},
            )
        ]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Generation]
    ) -> QuerySet[Generation]:
        if self.value() != "yes":
            return queryset
        cutoff = timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS)
        return queryset.filter(status__in=ACTIVE_STATUSES).filter(
            Q(last_synced_at__lt=cutoff) | Q(last_synced_at__isnull=True, created_at__lt=cutoff)
        )


class GenerationEventInline(admin.TabularInline):
    model = GenerationEvent
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("created_at", "status", "upstream_status", "source", "detail")
    readonly_fields = fields
    ordering = ("created_at", "id")

    def has_add_permission(self, request: HttpRequest, obj: Generation | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Generation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Generation | None = None) -> bool:
        return False


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "status",
        "user_link",
        "workflow",
        "cost",
        "age",
        "prompt_excerpt",
        "run_id",
    )
    list_filter = ("status", StuckFilter, "workflow", ("created_at", admin.DateFieldListFilter))
    search_fields = ("user__email", "run_id", "=id")
    search_help_text = gettext_lazy("Search by user email, run id or generation id.")
    list_select_related = ("user", "workflow")
    ordering = ("-created_at",)
    show_full_result_count = False
    actions = ["recheck_upstream", "cancel_and_refund"]
    inlines = (GenerationEventInline,)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "user_link",
                    "workflow",
                    "status",
                    "cost",
                    "credits",
                    "run_id",
                    "error",
                    "error_detail",
                )
            },
        ),
        (gettext_lazy("Inputs and outputs"), {"fields": ("inputs_pretty", "outputs_gallery")}),
        (
            gettext_lazy("Progress and timing"),
            {
                "fields": (
                    "progress",
                    "live_status",
                    "created_at",
                    "queued_at",
                    "started_at",
                    "finished_at",
                    "last_synced_at",
                    "updated_at",
                )
            },
        ),
    )
    # Everything shown is read-only: exactly the fields of the fieldsets above.
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    # A run changes only through the generation services: view-only for everyone.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Generation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Generation | None = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        # The model's change permission grants the operator actions (not field edits).
        return request.user.has_perm(OPERATE_PERMISSION)

    # --- Columns and fields ----------------------------------------------------------------------

    @admin.display(description=gettext_lazy("user"), ordering="user__email")
    def user_link(self, obj: Generation) -> str:
        url = reverse("admin:accounts_user_change", args=[obj.user_id])
        return format_html('<a href="{}">{}</a>', url, obj.user.email)

    @admin.display(description=gettext_lazy("age"), ordering="-created_at")
    def age(self, obj: Generation) -> str:
        return timesince(obj.created_at)

    @admin.display(description=gettext_lazy("prompt"))
    def prompt_excerpt(self, obj: Generation) -> str:
        prompt = obj.prompt
        return prompt if len(prompt) <= 60 else prompt[:59] + "…"

    @admin.display(description=gettext_lazy("inputs"))
    def inputs_pretty(self, obj: Generation) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps(obj.inputs, indent=2, ensure_ascii=False, sort_keys=True)
        )

    @admin.display(description=gettext_lazy("outputs"))
    def outputs_gallery(self, obj: Generation) -> str:
        outputs = obj.outputs if isinstance(obj.outputs, list) else []
        if not outputs:
            return "—"
        items = []
        for output in outputs:
            if not isinstance(output, dict):
                continue
            url = _safe_url(output.get("url"))
            kind = str(output.get("type", ""))
            if url and kind == "image":
                items.append(
                    format_html(
                        '<a href="{}" target="_blank" rel="noopener noreferrer">'
                        '<img src="{}" alt="{}" width="160" loading="lazy"></a>',
                        url,
                        url,
                        output.get("output_id") or _("output image"),
                    )
                )
            elif url:
                items.append(
                    format_html(
                        '<a href="{}" target="_blank" rel="noopener noreferrer">{}</a>',
                        url,
                        kind or url,
                    )
                )
            else:
                items.append(format_html("<code>{}</code>", str(output.get("url", ""))))
        return format_html_join(" ", "{}", ((item,) for item in items))

    @admin.display(description=gettext_lazy("credits"))
    def credits(self, obj: Generation) -> str:
        entries = list(obj.ledger_entries.order_by("created_at", "id"))
        if not entries:
            return "—"
        changelist = reverse("admin:credits_ledgerentry_changelist")
        return format_html_join(
            ", ",
            '<a href="{}?id={}">{} {}</a>',
            ((changelist, e.pk, e.get_kind_display(), f"{e.amount:+d}") for e in entries),
        )

    # --- Actions ---------------------------------------------------------------------------------

    @admin.action(
        description=gettext_lazy("Re-check upstream now"), permissions=["operate"], location=BOTH
    )
    def recheck_upstream(self, request: HttpRequest, queryset: QuerySet[Generation]) -> None:
        checked = changed = skipped = 0
        for generation in queryset.select_related("workflow"):
            if generation.is_terminal or not generation.run_id:
                skipped += 1
                continue
            before = (generation.status, generation.last_synced_at)
            after = generation_recheck(generation=generation)
            checked += 1
            if after.last_synced_at == before[1]:
                self.message_user(
                    request,
                    _(
                        "%(id)s: ComfyDeploy could not be reached or did not answer about this run; try again later."
                    )
                    % {"id": generation.pk},
                    level=messages.WARNING,
                )
            elif after.status != before[0]:
                changed += 1
        self.message_user(
            request,
            _(
                "Re-checked %(checked)d runs upstream; %(changed)d changed status. %(skipped)d were skipped (finished, or never queued)."
            )
            % {"checked": checked, "changed": changed, "skipped": skipped},
            level=messages.SUCCESS if checked or not skipped else messages.INFO,
        )

    @admin.action(
        description=gettext_lazy("Cancel and refund"), permissions=["operate"], location=BOTH
    )
    def cancel_and_refund(self, request: HttpRequest, queryset: QuerySet[Generation]) -> None:
        cancelled = skipped = 0
        for generation in queryset.select_related("workflow", "user"):
            if generation.is_terminal:
                skipped += 1
                continue
            after = generation_cancel(generation=generation, actor=request.user)
            # A racing webhook may have finished it first; the service refunds at most once anyway.
            if after.status == Status.CANCELLED:
                cancelled += 1
            else:
                skipped += 1
        if cancelled:
            self.message_user(
                request,
                ngettext(
                    "Cancelled %(count)d run and refunded its credits.",
                    "Cancelled %(count)d runs and refunded their credits.",
                    cancelled,
                )
                % {"count": cancelled},
                level=messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d run had already finished and was left as it was (nothing refunded again).",
                    "%(count)d runs had already finished and were left as they were (nothing refunded again).",
                    skipped,
                )
                % {"count": skipped},
                level=messages.WARNING,
            )
