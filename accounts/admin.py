"""Users in the back office: balance and active runs at a glance, the recent ledger and runs on the
user page, and the "adjust credits" action/button (served by ``credits.admin_views``)."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.models import User
from credits.admin_views import ADJUST_PERMISSION, MAX_BATCH_USERS, adjust_credits_view
from credits.models import LedgerEntry
from credits.services import balance_get
from generations.models import ACTIVE_STATUSES, Generation

RECENT_ROWS = 20

admin.site.site_header = _("Comfy Credits back office")
admin.site.site_title = _("Comfy Credits admin")
admin.site.index_title = _("Run the business")


class UserCreateForm(AdminUserCreationForm):
    """Create an account from its email address (there is no username)."""

    class Meta:
        model = User
        fields = ("email",)

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        # The database compares case-insensitively; say so nicely instead of failing on save.
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(_("A user with this email address already exists."))
        return email


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = (
            "email",
            "password",
            "is_active",
            "is_staff",
            "is_superuser",
            "groups",
            "user_permissions",
        )

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email__iexact=email).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError(_("A user with this email address already exists."))
        return email


class HasBalanceFilter(admin.SimpleListFilter):
    title = _("balance")
    parameter_name = "has_balance"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", _("Has credits")), ("no", _("No credits"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> QuerySet[User]:
        if self.value() == "yes":
            return queryset.filter(balance_value__gt=0)
        if self.value() == "no":
            return queryset.filter(balance_value__lte=0)
        return queryset


class RecentRowsFormSet(BaseInlineFormSet):
    """Only the newest rows: a long-time customer has thousands of ledger entries."""

    def get_queryset(self) -> QuerySet:
        if not hasattr(self, "_queryset"):
            self._queryset = super().get_queryset()[:RECENT_ROWS]
        return self._queryset


class ReadOnlyInline(admin.TabularInline):
    formset = RecentRowsFormSet
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class RecentLedgerInline(ReadOnlyInline):
    model = LedgerEntry
    fk_name = "user"
    verbose_name_plural = format_lazy(
        _("Recent ledger entries (newest {count})"), count=RECENT_ROWS
    )
    fields = ("created_at", "kind", "amount", "balance_after", "reason", "actor", "generation")
    readonly_fields = fields
    ordering = ("-created_at", "-id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[LedgerEntry]:
        return super().get_queryset(request).select_related("actor", "generation__workflow")


class RecentGenerationInline(ReadOnlyInline):
    model = Generation
    verbose_name_plural = format_lazy(_("Recent generations (newest {count})"), count=RECENT_ROWS)
    fields = ("created_at", "workflow", "status", "cost", "prompt_excerpt", "run_id")
    readonly_fields = fields
    ordering = ("-created_at",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Generation]:
        return super().get_queryset(request).select_related("workflow")

    @admin.display(description=_("prompt"))
    def prompt_excerpt(self, obj: Generation) -> str:
        prompt = obj.prompt
        return prompt if len(prompt) <= 80 else prompt[:79] + "…"


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreateForm
    list_display = (
        "email",
        "balance",
        "active_runs",
        "date_joined",
        "last_login",
        "is_staff",
        "is_active",
    )
    list_filter = ("is_staff", "is_superuser", "is_active", HasBalanceFilter, "groups")
    search_fields = ("email",)
    ordering = ("-date_joined",)
    readonly_fields = ("balance_summary", "last_login", "date_joined")
    actions = ["adjust_credits"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        (_("Credits"), {"fields": ("balance_summary",)}),
        (
            _("Permissions"),
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        (_("Important dates"), {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "usable_password", "password1", "password2"),
            },
        ),
    )
    inlines = (RecentLedgerInline, RecentGenerationInline)

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        # Annotated once for the whole page: no query per row for the balance or the runs.
        active_runs = (
            Generation.objects.filter(user=OuterRef("pk"), status__in=ACTIVE_STATUSES)
            .order_by()
            .values("user")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                balance_value=Coalesce("credit_balance__balance", Value(0)),
                active_runs_value=Coalesce(
                    Subquery(active_runs, output_field=IntegerField()), Value(0)
                ),
            )
        )

    def get_inlines(self, request: HttpRequest, obj: User | None) -> tuple:
        return self.inlines if obj is not None else ()

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "adjust-credits/",
                self.admin_site.admin_view(adjust_credits_view),
                {"admin_site": self.admin_site},
                name="accounts_user_adjust_credits",
            ),
            *super().get_urls(),
        ]

    @admin.display(description=_("balance"), ordering="balance_value")
    def balance(self, obj: User) -> int:
        return obj.balance_value

    @admin.display(description=_("active runs"), ordering="active_runs_value")
    def active_runs(self, obj: User) -> int:
        return obj.active_runs_value

    @admin.display(description=_("balance"))
    def balance_summary(self, obj: User) -> str:
        if obj.pk is None:
            return "—"
        balance = getattr(obj, "balance_value", None)
        if balance is None:
            balance = balance_get(user=obj)
        ledger_url = (
            reverse("admin:credits_ledgerentry_changelist") + "?" + urlencode({"user": obj.pk})
        )
        return format_html(
            '<strong>{}</strong> {} · <a href="{}">{}</a>',
            balance,
            _("credits"),
            ledger_url,
            _("full ledger"),
        )

    def has_adjust_credits_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ADJUST_PERMISSION)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        extra_context = extra_context or {}
        if self.has_adjust_credits_permission(request):
            extra_context["adjust_credits_url"] = (
                reverse("admin:accounts_user_adjust_credits") + "?" + urlencode({"user": object_id})
            )
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(
        description=_("Adjust credits of the selected users"), permissions=["adjust_credits"]
    )
    def adjust_credits(
        self, request: HttpRequest, queryset: QuerySet[User]
    ) -> HttpResponseRedirect | None:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[: MAX_BATCH_USERS + 1])
        if len(ids) > MAX_BATCH_USERS:
            self.message_user(
                request,
                ngettext(
                    "Adjust at most %(count)d user at a time.",
                    "Adjust at most %(count)d users at a time.",
                    MAX_BATCH_USERS,
                )
                % {"count": MAX_BATCH_USERS},
                level="error",
            )
            return None
        url = (
            reverse("admin:accounts_user_adjust_credits")
            + "?"
            + urlencode({"user": ids}, doseq=True)
        )
        return HttpResponseRedirect(url)
