"""Workflows in the back office: CRUD with one inline row per input field, "sync inputs from
ComfyDeploy", a paid test run for the acting admin, and no deleting a workflow that has runs."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import ActionLocation
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import unquote
from django.db import models
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from credits.services import CreditError
from generations.models import Generation, Status
from generations.services import GenerationRefused, generation_start
from workflows.inputs import InputsInvalid
from workflows.models import Workflow, WorkflowInput
from workflows.services import WorkflowSyncError, workflow_inputs_sync

BOTH = [ActionLocation.CHANGE_LIST, ActionLocation.CHANGE_FORM]
# Sent for required text inputs that have no default when staff test-run a workflow.
TEST_PROMPT = "Admin test run: a lighthouse on a cliff at sunset"
T = WorkflowInput.Type


INPUT_FIELDS = (
    "position",
    "input_id",
    "label",
    "type",
    "required",
    "default",
    "help_text",
    "max_length",
    "min_value",
    "max_value",
    "choices",
)


class WorkflowInputForm(forms.ModelForm):
    class Meta:
        model = WorkflowInput
        fields = INPUT_FIELDS
        widgets = {"choices": forms.Textarea(attrs={"rows": 2, "cols": 24})}

    def clean(self) -> dict:
        data = super().clean()
        low, high = data.get("min_value"), data.get("max_value")
        if low is not None and high is not None and low > high:
            self.add_error("max_value", _("The maximum must not be below the minimum."))
        if data.get("type") == T.CHOICE:
            options = [
                line.strip() for line in (data.get("choices") or "").splitlines() if line.strip()
            ]
            if not options:
                self.add_error("choices", _("A choice needs at least one option, one per line."))
            elif data.get("default") and data["default"] not in options:
                self.add_error("default", _("The default must be one of the choices."))
        return data


class WorkflowInputInline(admin.TabularInline):
    model = WorkflowInput
    form = WorkflowInputForm
    extra = 0
    ordering = ("position", "id")
    fields = INPUT_FIELDS


def _count(model: type[models.Model]) -> Subquery:
    rows = (
        model.objects.filter(workflow=OuterRef("pk"))
        .order_by()
        .values("workflow")
        .annotate(n=Count("pk"))
    )
    return Coalesce(Subquery(rows.values("n"), output_field=IntegerField()), Value(0))


def _test_inputs(workflow: Workflow) -> dict[str, object]:
    """JSON values for required inputs without a default; everything else takes its default."""
    values: dict[str, object] = {}
    for field in workflow.inputs.all():
        if not field.required or field.default.strip():
            continue
        match field.type:
            case T.TEXT | T.LONG_TEXT:
                values[field.input_id] = TEST_PROMPT[: field.effective_max_length]
            case T.INTEGER:
                values[field.input_id] = int(field.min_value) if field.min_value is not None else 0
            case T.NUMBER:
                values[field.input_id] = field.min_value if field.min_value is not None else 0.0
            case T.CHOICE if field.choice_list:
                values[field.input_id] = field.choice_list[0]
    return values


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "slug",
        "cost",
        "is_active",
        "position",
        "inputs_count",
        "generations_count",
        "deployment_id",
    )
    list_display_links = ("name",)
    list_editable = ("is_active", "position")
    list_filter = ("is_active",)
    search_fields = ("name", "slug", "deployment_id")
    prepopulated_fields = {"slug": ("name",)}
    ordering = ("position", "name")
    inlines = (WorkflowInputInline,)
    actions = ["sync_inputs", "test_run", "delete_selected"]
    fieldsets = (
        (None, {"fields": ("name", "slug", "description", "deployment_id")}),
        (gettext_lazy("Offer"), {"fields": ("cost", "is_active", "position")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Workflow]:
        return (
            super()
            .get_queryset(request)
            .annotate(inputs_total=_count(WorkflowInput), generations_total=_count(Generation))
        )

    @admin.display(description=gettext_lazy("inputs"), ordering="inputs_total")
    def inputs_count(self, obj: Workflow) -> int:
        return obj.inputs_total

    @admin.display(description=gettext_lazy("runs"), ordering="generations_total")
    def generations_count(self, obj: Workflow) -> int:
        return obj.generations_total

    # --- Actions ---------------------------------------------------------------------------------

    @admin.action(
        description=gettext_lazy("Sync inputs from ComfyDeploy"),
        permissions=["change"],
        location=BOTH,
    )
    def sync_inputs(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset:
            try:
                fields = workflow_inputs_sync(workflow=workflow)
            except WorkflowSyncError as exc:
                self.message_user(
                    request, format_html("{}: {}", workflow.name, exc.message), level=messages.ERROR
                )
                continue
            self.message_user(
                request,
                format_html(
                    "{}: {}",
                    workflow.name,
                    ngettext(
                        "synced %(count)d input from ComfyDeploy (%(ids)s).",
                        "synced %(count)d inputs from ComfyDeploy (%(ids)s).",
                        len(fields),
                    )
                    % {"count": len(fields), "ids": ", ".join(f.input_id for f in fields)},
                ),
                level=messages.SUCCESS,
            )

    @admin.action(
        description=gettext_lazy("Test run (queues one run for you, charged to your own credits)"),
        permissions=["change"],
        location=BOTH,
    )
    def test_run(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        workflows = list(queryset[:2])
        if len(workflows) != 1:
            self.message_user(
                request, _("Select exactly one workflow to test-run."), level=messages.ERROR
            )
            return
        workflow = workflows[0]
        try:
            generation = generation_start(
                user=request.user, workflow=workflow, inputs=_test_inputs(workflow), json=True
            )
        except InputsInvalid as exc:
            problems = format_html_join(
                "; ", "{}: {}", ((k, " ".join(v)) for k, v in exc.errors.items())
            )
            self.message_user(
                request,
                format_html(
                    "{} {}", _("The test run was not started: its inputs need values."), problems
                ),
                level=messages.ERROR,
            )
            return
        except (GenerationRefused, CreditError) as exc:
            self.message_user(
                request,
                format_html("{} {}", _("The test run was not started:"), exc.message),
                level=messages.ERROR,
            )
            return
        url = reverse("admin:generations_generation_change", args=[generation.pk])
        if generation.status == Status.FAILED:
            self.message_user(
                request,
                format_html(
                    '{} {} <a href="{}">{}</a>',
                    _("The test run failed:"),
                    generation.error,
                    url,
                    _("See the run."),
                ),
                level=messages.WARNING,
            )
            return
        self.message_user(
            request,
            format_html(
                '{} <a href="{}">{}</a>',
                _(
                    "Queued a test run of “%(workflow)s”. It was charged %(cost)d credits to your own "
                    "account (%(email)s), like any user's run."
                )
                % {"workflow": workflow.name, "cost": generation.cost, "email": request.user.email},
                url,
                _("Follow the run."),
            ),
            level=messages.SUCCESS,
        )

    @admin.action(
        description=gettext_lazy("Delete selected %(verbose_name_plural)s"), permissions=["delete"]
    )
    def delete_selected(
        self, request: HttpRequest, queryset: QuerySet[Workflow]
    ) -> HttpResponse | None:
        used = list(
            queryset.filter(generations__isnull=False).distinct().values_list("name", flat=True)
        )
        if used:
            self.message_user(request, self._used_message(used), level=messages.ERROR)
            return None
        return django_delete_selected(self, request, queryset)

    # --- Delete guard ----------------------------------------------------------------------------

    @staticmethod
    def _used_message(names: list[str]) -> str:
        return ngettext(
            "%(names)s has runs, so it cannot be deleted (its runs and their ledger entries must "
            "stay). Deactivate it instead: untick “Active” and save.",
            "%(names)s have runs, so they cannot be deleted (their runs and ledger entries must "
            "stay). Deactivate them instead: untick “Active” and save.",
            len(names),
        ) % {"names": ", ".join(f"“{n}”" for n in names)}

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict | None = None
    ) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        if (
            obj is not None
            and self.has_delete_permission(request, obj)
            and obj.generations.exists()
        ):
            self.message_user(request, self._used_message([obj.name]), level=messages.ERROR)
            return HttpResponseRedirect(reverse("admin:workflows_workflow_change", args=[obj.pk]))
        return super().delete_view(request, object_id, extra_context)
