"""The creator's credits page: balance, the full ledger (paginated) and the packages on sale."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from credits.models import CreditPackage, LedgerEntry
from credits.services import balance_get
from payments.models import Purchase

LEDGER_PAGE_SIZE = 25


@require_GET
@login_required
def credits_page(request: HttpRequest) -> HttpResponse:
    entries = LedgerEntry.objects.for_user(request.user)
    page = Paginator(entries, LEDGER_PAGE_SIZE).get_page(request.GET.get("page"))
    if request.htmx and not request.htmx.history_restore_request:
        response = render(request, "credits/credits.html#ledger", {"page": page})
    else:
        context = {
            "page": page,
            "balance": balance_get(user=request.user),
            "packages": CreditPackage.objects.filter(is_active=True),
            "purchases": Purchase.objects.for_user(request.user)[:20],
        }
        response = render(request, "credits/credits.html", context)
    patch_vary_headers(response, ("HX-Request",))
    return response
