from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from credits.services import balance_get


def balance(request: HttpRequest) -> dict:
    """``credit_balance`` for the top bar; lazy, so pages that do not show it pay no query."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"credit_balance": SimpleLazyObject(lambda: balance_get(user=user))}
