"""Personal API keys. Only a SHA-256 hash of each key is stored: the key itself is shown once."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

# Every key starts with this, so a leaked key is recognisable (secret scanners, logs).
KEY_PREFIX = "cc_"


def key_hash(token: str) -> str:
    """The stored form of a key. A fast hash is right here: keys carry 256 random bits, so there is
    nothing to brute-force, and a salt-free hash can be looked up by an index."""
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def for_user(self, user: settings.AUTH_USER_MODEL) -> ApiKeyQuerySet:
        return self.filter(user=user)

    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """One named key that authenticates its owner on /api/v1/ (``Authorization: Bearer <key>``)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="api_keys",
        verbose_name=_("user"),
    )
    name = models.CharField(_("name"), max_length=100)
    # The random middle part of "cc_<prefix>_<secret>": enough to recognise a key in a list.
    prefix = models.CharField(_("prefix"), max_length=16)
    key_hash = models.CharField(_("key hash (SHA-256)"), max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    # Updated at most once a minute (see apikeys.auth), so it is "last used, give or take a minute".
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"], name="apikey_user_created")]

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix})"

    @property
    def display_prefix(self) -> str:
        """How the key is shown once its secret is gone: ``cc_1a2b3c4d_…``."""
        return f"{KEY_PREFIX}{self.prefix}_…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
