"""django-ninja authentication with a personal API key: ``Authorization: Bearer cc_…``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest
from django.utils.translation import gettext as _
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer

from apikeys.services import api_key_authenticate

if TYPE_CHECKING:
    from accounts.models import User


class InvalidApiKey(AuthenticationError):
    """A Bearer key was sent but is unknown, revoked, or its owner is deactivated."""

    def __init__(self) -> None:
        super().__init__(
            401,
            _(
                "The API key is not valid or was revoked. Create a new one under Settings → API keys."
            ),
        )


class ApiKeyAuth(HttpBearer):
    """Listed before SessionAuth, so a Bearer request never needs a CSRF token: CSRF protects
    ambient credentials (cookies), and a key must be attached deliberately by its holder."""

    openapi_bearerFormat = "cc_<prefix>_<secret>"
    openapi_description = (
        "A personal API key, created at /dashboard/settings/api-keys/. "
        "Send it as `Authorization: Bearer <key>`; no CSRF token is needed."
    )

    def authenticate(self, request: HttpRequest, token: str) -> User:
        api_key = api_key_authenticate(token=token)
        if api_key is None:
            # Stop here rather than fall through to the session: a wrong key is an error to report,
            # not an anonymous request.
            raise InvalidApiKey()
        request.api_key = api_key  # type: ignore[attr-defined]
        return api_key.user
