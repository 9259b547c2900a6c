import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _


class Status(models.TextChoices):
    PENDING = "pending", _("Pending")
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")
    TIMED_OUT = "timed_out", _("Timed out")


ACTIVE_STATUSES = (Status.PENDING, Status.QUEUED, Status.RUNNING)
TERMINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT)
# Terminal outcomes that give the credits back.
REFUNDED_STATUSES = (Status.FAILED, Status.CANCELLED, Status.TIMED_OUT)


class GenerationQuerySet(models.QuerySet["Generation"]):
    def for_user(self, user: settings.AUTH_USER_MODEL) -> "GenerationQuerySet":
        return self.filter(user=user)

    def active(self) -> "GenerationQuerySet":
        return self.filter(status__in=ACTIVE_STATUSES)

    def terminal(self) -> "GenerationQuerySet":
        return self.filter(status__in=TERMINAL_STATUSES)


class Generation(models.Model):
    """One paid run of a workflow. Its id is a UUID: ids in URLs must not be guessable."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="generations",
        verbose_name=_("user"),
    )
    workflow = models.ForeignKey(
        "workflows.Workflow",
        on_delete=models.PROTECT,
        related_name="generations",
        verbose_name=_("workflow"),
    )
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    # Snapshotted at start so a later price change never alters a refund.
    cost = models.PositiveIntegerField(_("cost"))
    inputs = models.JSONField(_("inputs"), default=dict)
    # [{"url": ..., "type": "image", "output_id": ...}]
    outputs = models.JSONField(_("outputs"), default=list, blank=True)
    # ``error`` is an English msgid (translated when shown); ``error_detail`` the technical reason.
    error = models.TextField(_("error"), blank=True)
    error_detail = models.CharField(_("error detail"), max_length=500, blank=True)
    progress = models.FloatField(_("progress"), default=0.0)
    live_status = models.CharField(_("live status"), max_length=255, blank=True)
    run_id = models.CharField(_("run id"), max_length=64, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    queued_at = models.DateTimeField(_("queued at"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    # Last time we heard about the run from upstream (webhook or poll); drives the watchdog.
    last_synced_at = models.DateTimeField(_("last heard from upstream"), null=True, blank=True)

    objects = GenerationQuerySet.as_manager()

    class Meta:
        verbose_name = _("generation")
        verbose_name_plural = _("generations")
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "status"], name="generation_user_status"),
            models.Index(fields=["user", "-created_at"], name="generation_user_created"),
            models.Index(fields=["status", "last_synced_at"], name="generation_status_synced"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["run_id"], condition=~Q(run_id=""), name="generation_unique_run_id"
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=1),
                name="generation_progress_fraction",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id}:{self.id}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def error_display(self) -> str:
        """The error in the reader's language: services store English msgids (a webhook or the
        watchdog has no reader to translate for), translated here when shown."""
        return gettext(self.error) if self.error else ""

    @property
    def error_text(self) -> str:
        """The full English error for the API and logs."""
        return f"{self.error} ({self.error_detail})" if self.error_detail else self.error

    @property
    def is_refunded_status(self) -> bool:
        return self.status in REFUNDED_STATUSES

    @property
    def log_context(self) -> dict[str, str]:
        return {"generation_id": str(self.id), "run_id": self.run_id}

    @property
    def prompt(self) -> str:
        """The main text input, for galleries and titles."""
        for key in ("prompt", "positive_prompt", "text"):
            value = self.inputs.get(key) if isinstance(self.inputs, dict) else None
            if isinstance(value, str):
                return value
        return ""

    @property
    def images(self) -> list[dict]:
        return [o for o in self.outputs if o.get("type") == "image"]


class GenerationEvent(models.Model):
    """The status history of a generation: what was heard, from where, and when."""

    class Source(models.TextChoices):
        APP = "app", _("App")
        WEBHOOK = "webhook", _("Webhook")
        POLL = "poll", _("Poll")
        WATCHDOG = "watchdog", _("Watchdog")
        ADMIN = "admin", _("Admin")

    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="events")
    status = models.CharField(_("status"), max_length=16, choices=Status.choices)
    upstream_status = models.CharField(_("upstream status"), max_length=32, blank=True)
    source = models.CharField(_("source"), max_length=16, choices=Source.choices)
    detail = models.CharField(_("detail"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("at"), auto_now_add=True)

    class Meta:
        verbose_name = _("status event")
        verbose_name_plural = _("status history")
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.status} ({self.source})"


class IdempotencyRecord(models.Model):
    """One ``Idempotency-Key`` of ``POST /api/v1/generations`` and the answer it got.

    The unique (user, key) row is the lock: whoever inserts it runs the request, everyone else with
    the same key replays its stored answer. Records older than a day are ignored and pruned
    (``generations.idempotency``).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(_("idempotency key"), max_length=255)
    # SHA-256 of the canonical JSON body: the same key with another body is refused.
    request_hash = models.CharField(_("request hash"), max_length=64)
    # Both empty while the first request is still running.
    response_status = models.PositiveSmallIntegerField(_("response status"), null=True, blank=True)
    response_body = models.JSONField(_("response body"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("idempotency record")
        verbose_name_plural = _("idempotency records")
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_unique_user_key"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key}"
