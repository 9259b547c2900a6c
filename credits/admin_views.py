"""Staff "adjust credits" (admin): pick users, enter a signed amount and a reason, preview the
balances it will leave, confirm. Credits move only through ``credits.services.credits_adjust``.

Protected twice: ``admin_site.admin_view`` lets only active staff in, and the view itself
requires the ``credits.adjust_credits`` permission (superusers have it implicitly).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.admin import AdminSite
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods

from accounts.models import User
from credits.forms import AdjustCreditsForm
from credits.models import CreditBalance
from credits.services import CreditError, credits_adjust

ADJUST_PERMISSION = "credits.adjust_credits"
# One batch is one transaction holding every selected user's balance lock: keep it small.
MAX_BATCH_USERS = 100
# A confirmed form is applied once, even if the button is pressed twice or the POST is replayed.
_TOKEN_TTL_SECONDS = 24 * 3600


@dataclass
class _Row:
    user: User
    balance: int
    after: int | None = None

    @property
    def goes_negative(self) -> bool:
        return self.after is not None and self.after < 0


def _users_from_request(request: HttpRequest) -> list[User]:
    """The selected users (``?user=1&user=2``), in id order (the lock order for a batch)."""
    source = request.POST if request.method == "POST" else request.GET
    ids = {int(raw) for raw in source.getlist("user") if raw.isdigit()}
    if not ids or len(ids) > MAX_BATCH_USERS:
        return []
    return list(User.objects.filter(pk__in=ids).order_by("pk"))


def _rows(users: list[User], amount: int | None = None) -> list[_Row]:
    balances = dict(CreditBalance.objects.filter(user__in=users).values_list("user_id", "balance"))
    rows = [_Row(user=u, balance=balances.get(u.pk, 0)) for u in users]
    if amount is not None:
        for row in rows:
            row.after = row.balance + amount
    return rows


def _apply(*, users: list[User], amount: int, reason: str, actor: User) -> list:
    # All or nothing: one user who cannot take the adjustment leaves every balance untouched.
    with transaction.atomic():
        return [credits_adjust(user=u, amount=amount, reason=reason, actor=actor) for u in users]


@require_http_methods(["GET", "POST"])
@login_required
def adjust_credits_view(request: HttpRequest, *, admin_site: AdminSite) -> HttpResponse:
    if not request.user.has_perm(ADJUST_PERMISSION):
        raise PermissionDenied
    changelist_url = reverse("admin:accounts_user_changelist")
    users = _users_from_request(request)
    if not users:
        messages.error(
            request,
            _("Select between 1 and %(max)d existing users to adjust their credits.")
            % {"max": MAX_BATCH_USERS},
        )
        return HttpResponseRedirect(changelist_url)

    form = AdjustCreditsForm(request.POST if request.method == "POST" else None)
    step = "edit"
    error = ""
    rows = _rows(users)
    token = request.POST.get("token", "") if request.method == "POST" else ""
    if request.method == "POST" and "edit" not in request.POST and form.is_valid():
        amount, reason = form.cleaned_data["amount"], form.cleaned_data["reason"]
        rows = _rows(users, amount)
        if "confirm" not in request.POST:
            step = "preview"
            token = secrets.token_urlsafe(24)
            negative = next((r for r in rows if r.goes_negative), None)
            if negative is not None:
                step = "edit"
                error = _(
                    "%(email)s has %(balance)d credits; removing %(amount)d would leave a negative balance."
                ) % {"email": negative.user.email, "balance": negative.balance, "amount": -amount}
        elif not token or not cache.add(f"adjust-credits:{token}", True, _TOKEN_TTL_SECONDS):
            # Already applied (double click, back button and resubmit): do not move credits twice.
            messages.warning(
                request, _("This adjustment was already submitted; it was applied once.")
            )
            return HttpResponseRedirect(_done_url(users))
        else:
            try:
                entries = _apply(users=users, amount=amount, reason=reason, actor=request.user)
            except CreditError as exc:
                # Nothing was written; the token was spent, so the next preview issues a new one.
                error = exc.message
                rows = _rows(users, amount)
            else:
                for entry, user in zip(entries, users, strict=True):
                    messages.success(
                        request,
                        _("%(email)s: %(amount)+d credits, balance now %(balance)d.")
                        % {
                            "email": user.email,
                            "amount": entry.amount,
                            "balance": entry.balance_after,
                        },
                    )
                return HttpResponseRedirect(_done_url(users))

    context = {
        **admin_site.each_context(request),
        "title": ngettext(
            "Adjust credits of %(count)d user", "Adjust credits of %(count)d users", len(users)
        )
        % {"count": len(users)},
        "opts": User._meta,
        "form": form,
        "rows": rows,
        "step": step,
        "error": error,
        "token": token,
        "users": users,
        "cancel_url": _done_url(users),
        "query": urlencode({"user": [u.pk for u in users]}, doseq=True),
    }
    return render(request, "admin/credits/adjust_credits.html", context)


def _done_url(users: list[User]) -> str:
    if len(users) == 1:
        return reverse("admin:accounts_user_change", args=[users[0].pk])
    return reverse("admin:accounts_user_changelist")
