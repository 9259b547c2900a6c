"""Creating, revoking and checking personal API keys."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from apikeys.models import KEY_PREFIX, ApiKey, key_hash

if TYPE_CHECKING:
    from accounts.models import User

# Enough for every tool a person scripts; a cap keeps a runaway script from minting thousands.
MAX_ACTIVE_KEYS = 20
NAME_MAX_LENGTH = 100
# Writing last_used_at on every request would turn each API read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Anything longer is not one of our keys: refuse before touching the database.
_MAX_TOKEN_LENGTH = 128


class ApiKeyRefused(Exception):
    """A key that could not be created. ``message`` is safe to show to the user."""

    code = "api_key_refused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _new_token() -> tuple[str, str]:
    """(prefix, full key): ``cc_<8 hex>_<43 url-safe chars, 256 random bits>``."""
    prefix = secrets.token_hex(4)
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def api_key_create(*, user: User, name: str) -> tuple[ApiKey, str]:
    """Create a named key and return it with its plaintext, which is never stored or shown again."""
    name = " ".join(name.split())
    if not name:
        raise ApiKeyRefused(_("Give the key a name, e.g. the tool that will use it."))
    if len(name) > NAME_MAX_LENGTH:
        raise ApiKeyRefused(
            _("Use a name of at most %(limit)d characters.") % {"limit": NAME_MAX_LENGTH}
        )
    with transaction.atomic():
        # The user row lock serialises concurrent creations, so the cap holds.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        if ApiKey.objects.for_user(user).active().count() >= MAX_ACTIVE_KEYS:
            raise ApiKeyRefused(
                _("You already have %(limit)d active keys. Revoke one you no longer use first.")
                % {"limit": MAX_ACTIVE_KEYS}
            )
        prefix, token = _new_token()
        api_key = ApiKey.objects.create(
            user=user, name=name, prefix=prefix, key_hash=key_hash(token)
        )
    return api_key, token


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key for good (a no-op on a key already revoked)."""
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    api_key.refresh_from_db(fields=["revoked_at"])
    return api_key


def api_key_authenticate(*, token: str) -> ApiKey | None:
    """The active key of an active user matching ``token``, or None.

    The lookup is by the SHA-256 of the presented key through a unique index: what an attacker can
    time is a comparison of hashes they cannot steer, never of the secret itself.
    """
    token = token.strip()
    if not token.startswith(KEY_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
        return None
    api_key = (
        ApiKey.objects.active()
        .filter(key_hash=key_hash(token), user__is_active=True)
        .select_related("user")
        .first()
    )
    if api_key is None:
        return None
    now = timezone.now()
    stale = now - LAST_USED_RESOLUTION
    if api_key.last_used_at is None or api_key.last_used_at < stale:
        # Conditional, so a burst of requests writes once rather than once per request.
        ApiKey.objects.filter(pk=api_key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale)
        ).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


def api_key_user_from_header(authorization: str) -> tuple[bool, User | None]:
    """(a Bearer key was presented, its user or None) for an ``Authorization`` header value."""
    scheme, _sep, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False, None
    api_key = api_key_authenticate(token=token)
    return True, api_key.user if api_key is not None else None
