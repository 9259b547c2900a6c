"""``{% admin_summary as summary %}`` for the admin index (templates/admin/index.html)."""

from typing import Any

from django import template

register = template.Library()


@register.simple_tag(takes_context=True)
def admin_summary(context: template.Context) -> dict[str, Any] | None:
    # Business figures are for staff who may read the ledger, not for every staff account.
    request = context.get("request")
    if request is None or not request.user.has_perm("credits.view_ledgerentry"):
        return None
    from credits.admin import admin_summary as summary  # the admin module owns the numbers

    return summary()
