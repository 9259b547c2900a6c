"""Small template helpers for the product's pages: money, numbers, accessible form widgets,
pagination links and durations. Loaded with ``{% load ui %}``."""

from datetime import datetime
from decimal import Decimal, InvalidOperation

from django import template
from django.forms import BoundField
from django.http import HttpRequest
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import get_language, gettext, ngettext

register = template.Library()

# How each currency is written; anything else falls back to its ISO code.
_CURRENCY_SYMBOLS = {
    "USD": "US$",
    "EUR": "€",
    "MXN": "MX$",
    "GBP": "£",
    "ARS": "AR$",
    "COP": "COL$",
}
# Languages that write the symbol after the number ("99,00 US$").
_SYMBOL_AFTER = {"es", "fr", "de", "it", "pt"}


@register.filter
def as_int(value: object) -> int:
    """A plain int from a number or a lazy object (``blocktranslate count`` needs a real number)."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


@register.filter
def money(amount: object, currency: str = "USD") -> str:
    """A price written for the active language: "US$99.00" in English, "99,00 US$" in Spanish."""
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return ""
    number = number_format(value, decimal_pos=2, use_l10n=True, force_grouping=True)
    code = (currency or "USD").upper()
    symbol = _CURRENCY_SYMBOLS.get(code, code)
    language = (get_language() or "en").split("-")[0]
    if language in _SYMBOL_AFTER:
        return f"{number}\N{NO-BREAK SPACE}{symbol}"
    return f"{symbol}{number}"


@register.filter
def percent(fraction: object) -> int:
    """A 0..1 progress fraction as a whole percentage, clamped."""
    try:
        value = float(str(fraction))
    except (TypeError, ValueError):
        return 0
    return max(0, min(100, round(value * 100)))


@register.filter
def signed(value: object) -> str:
    """A credit amount with its sign, so the ledger reads +5 or -2 at a glance (a real minus sign)."""
    number = as_int(value)
    return f"+{number}" if number > 0 else f"\N{MINUS SIGN}{abs(number)}"


@register.filter
def widget(field: BoundField) -> SafeString:
    """Render a form field's widget wired to its help text and errors for screen readers."""
    attrs: dict[str, str] = {}
    described = []
    if field.help_text:
        described.append(f"{field.auto_id}_help")
    if field.errors:
        described.append(f"{field.auto_id}_errors")
        attrs["aria-invalid"] = "true"
    if described:
        attrs["aria-describedby"] = " ".join(described)
    return field.as_widget(attrs=attrs)


@register.filter
def is_checkbox(field: BoundField) -> bool:
    return getattr(field.field.widget, "input_type", None) == "checkbox"


@register.simple_tag(takes_context=True)
def page_url(context: template.Context, number: int) -> str:
    """A link to another page of a list that keeps the request's other query parameters."""
    request: HttpRequest | None = context.get("request")
    query = request.GET.copy() if request is not None else None
    if query is None:
        return f"?page={number}"
    query["page"] = str(number)
    return "?" + query.urlencode()


@register.simple_tag
def duration(start: datetime | None, end: datetime | None) -> str:
    """The time between two moments, written for people ("1 min 5 s"); empty if unknown."""
    if not start or not end:
        return ""
    seconds = max(0, round((end - start).total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    if minutes:
        return gettext("%(minutes)d min %(seconds)d s") % {"minutes": minutes, "seconds": seconds}
    return ngettext("%(seconds)d second", "%(seconds)d seconds", seconds) % {"seconds": seconds}


@register.simple_tag
def credits_label(amount: object) -> SafeString:
    """The translated "1 credit" / "5 credits"."""
    number = as_int(amount)
    text = ngettext("%(count)s credit", "%(count)s credits", number) % {"count": number}
    return format_html("{}", text)
