"""The generation lifecycle: start (charge + queue), apply upstream snapshots, cancel, reconcile.

Lock order everywhere is generation row, then balance row (the refund locks the balance inside
the generation's transaction). ``generation_start`` locks only the balance and inserts a new
generation, so the two never deadlock. No lock is ever held across an HTTP call to ComfyDeploy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from config.logging import log_context
from credits.services import balance_lock, generation_charge, generation_refund
from generations.comfydeploy import ComfyDeployError, RunSnapshot, get_client
from generations.models import (
    ACTIVE_STATUSES,
    REFUNDED_STATUSES,
    Generation,
    GenerationEvent,
    Status,
)
from generations.outputs import outputs_persist_schedule
from workflows.inputs import inputs_validate

if TYPE_CHECKING:
    from accounts.models import User
    from workflows.models import Workflow

logger = logging.getLogger("generations")

UPSTREAM_TO_LOCAL = {
    "not-started": Status.QUEUED,
    "queued": Status.QUEUED,
    "started": Status.RUNNING,
    "running": Status.RUNNING,
    "uploading": Status.RUNNING,
    "success": Status.SUCCEEDED,
    "failed": Status.FAILED,
    "cancelled": Status.CANCELLED,
    "timeout": Status.TIMED_OUT,
}
# Intermediate statuses only move forward; terminal ones are sticky.
_RANK = {Status.PENDING: 0, Status.QUEUED: 1, Status.RUNNING: 2}
_WEBHOOK_SALT = "generations.webhook"
Source = GenerationEvent.Source


class GenerationRefused(Exception):
    """A start that was refused before anything was charged. ``message`` is user-safe."""

    code = "generation_refused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TooManyActiveGenerations(GenerationRefused):
    code = "too_many_active_generations"


# --- Webhook capability URLs --------------------------------------------------------------------


def _webhook_signer() -> signing.Signer:
    # Its own salt, so the token is useless anywhere else; SECRET_KEY_FALLBACKS rotate it.
    return signing.Signer(salt=_WEBHOOK_SALT)


def webhook_token(generation_id: object) -> str:
    return _webhook_signer().signature(str(generation_id))


def webhook_token_valid(generation_id: object, token: str) -> bool:
    """Constant-time check (``Signer.unsign`` uses ``constant_time_compare``) against every key."""
    try:
        _webhook_signer().unsign(f"{generation_id}:{token}")
    except signing.BadSignature:
        return False
    return True


def webhook_url_for(generation: Generation) -> str:
    path = reverse("comfydeploy_webhook", args=[generation.id, webhook_token(generation.id)])
    return f"{settings.APP_URL}{path}"


# --- Start --------------------------------------------------------------------------------------


def generation_start(
    *, user: User, workflow: Workflow, inputs: Mapping, json: bool = False
) -> Generation:
    """Validate, charge and queue one run. Raises InputsInvalid, TooManyActiveGenerations or
    InsufficientCredits before anything moves. Returns the generation: ``queued``, or ``failed``
    (already refunded, ``error`` says why) when ComfyDeploy could not take the run."""
    cleaned = inputs_validate(workflow=workflow, data=inputs, json=json)
    with transaction.atomic():
        balance = balance_lock(user_id=user.pk)
        # Counted after the lock: two concurrent starts by one user serialise here.
        active = Generation.objects.filter(user_id=user.pk, status__in=ACTIVE_STATUSES).count()
        if active >= settings.MAX_CONCURRENT_RUNS:
            raise TooManyActiveGenerations(
                _(
                    "You already have %(count)d generations running, the most at once. Wait for one to finish."
                )
                % {"count": active}
            )
        generation = Generation.objects.create(
            user=user, workflow=workflow, cost=workflow.cost, inputs=cleaned, status=Status.PENDING
        )
        generation_charge(generation=generation, balance=balance)
    logger.info("generation charged", extra={**generation.log_context, "cost": generation.cost})
    return _generation_queue(generation=generation, workflow=workflow)


def _generation_queue(*, generation: Generation, workflow: Workflow) -> Generation:
    try:
        with log_context(**generation.log_context):
            run_id = get_client().queue_run(
                deployment_id=workflow.deployment_id,
                inputs=generation.inputs,
                webhook_url=webhook_url_for(generation),
            )
    except ComfyDeployError as exc:
        logger.warning("queue failed: %s", exc.message, extra=generation.log_context)
        return _generation_finish(
            generation_id=generation.id,
            status=Status.FAILED,
            error=gettext_noop(
                "The image service could not start this run. Your credits were refunded; "
                "please try again in a minute."
            ),
            error_detail=exc.message,
            source=Source.APP,
        )
    now = timezone.now()
    # The common case in one statement (the hot path): a still-pending generation becomes queued.
    # Nothing else touches a pending generation except to end it, so the copy in hand is current.
    queued = Generation.objects.filter(pk=generation.pk, status=Status.PENDING).update(
        run_id=run_id, status=Status.QUEUED, queued_at=now, last_synced_at=now, updated_at=now
    )
    if queued:
        current = generation
        current.run_id, current.status = run_id, Status.QUEUED
        current.queued_at = current.last_synced_at = current.updated_at = now
        _record_event(current, source=Source.APP, upstream_status="not-started")
    else:
        # Ended meanwhile (the watchdog): keep its status, but remember the run id.
        with transaction.atomic():
            current = Generation.objects.select_for_update().get(pk=generation.pk)
            current.run_id = run_id
            current.save(update_fields=["run_id", "updated_at"])
    current.workflow = workflow  # already loaded: saves the caller a query when rendering
    if current.is_terminal:
        # The watchdog gave up on this run while the queue call hung; it was refunded, so make
        # sure it does not keep burning GPU time upstream.
        _cancel_upstream(current)
    logger.info("generation queued", extra=current.log_context)
    return current


# --- Applying what upstream says ----------------------------------------------------------------


def _record_event(
    generation: Generation, *, source: str, upstream_status: str = "", detail: str = ""
) -> None:
    GenerationEvent.objects.create(
        generation=generation,
        status=generation.status,
        upstream_status=upstream_status,
        source=source,
        detail=detail[:500],
    )


def _generation_finish(
    *,
    generation_id: object,
    status: str,
    error: str,
    source: str,
    upstream_status: str = "",
    note: str = "",
    error_detail: str = "",
) -> Generation:
    """Move a generation to a terminal status and refund it if that status refunds, in one
    transaction. A generation already terminal is returned untouched. ``note`` is appended to
    the status event's detail (e.g. who cancelled); ``error_detail`` is the technical reason
    shown beside the error (e.g. ComfyDeploy's answer)."""
    with transaction.atomic():
        generation = Generation.objects.select_for_update().get(pk=generation_id)
        if generation.is_terminal:
            return generation
        generation.status = status
        generation.error = error
        generation.error_detail = error_detail[:500]
        generation.finished_at = timezone.now()
        generation.save(
            update_fields=["status", "error", "error_detail", "finished_at", "updated_at"]
        )
        _record_event(
            generation,
            source=source,
            upstream_status=upstream_status,
            detail=" ".join(part for part in (error, error_detail, note) if part),
        )
        if status in REFUNDED_STATUSES:
            generation_refund(generation=generation)
    logger.info("generation %s", status, extra={**generation.log_context, "source": source})
    return generation


def _failure_message(status: str) -> str:
    return {
        Status.FAILED: gettext_noop(
            "The workflow failed on ComfyDeploy. Your credits were refunded."
        ),
        Status.CANCELLED: gettext_noop("The run was cancelled. Your credits were refunded."),
        Status.TIMED_OUT: gettext_noop(
            "The run took too long and was stopped. Your credits were refunded."
        ),
    }.get(status, "")


_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_MAX_OUTPUT_URL = 4096


def _run_id_adoptable(generation: Generation, run_id: str) -> bool:
    """Whether a run id heard about a generation that has none may become its run id: only for a
    generation already over (a pending one is still waiting for its queue call to answer), only
    an id shaped like upstream's, and only one no other generation holds."""
    return (
        not generation.run_id
        and generation.is_terminal
        and _RUN_ID_RE.fullmatch(run_id) is not None
        and not Generation.objects.filter(run_id=run_id).exists()
    )


def _output_url_ok(url: str) -> bool:
    # Outputs end up in <img src>/<a href> and are downloaded by the output copier: only plain
    # http(s) URLs without control characters (PostgreSQL's JSONB also refuses NUL).
    if not 0 < len(url) <= _MAX_OUTPUT_URL or not url.isprintable():
        return False
    try:
        return urlsplit(url).scheme in ("http", "https")
    except ValueError:  # e.g. an unbalanced "[" in the host
        return False


def generation_apply_snapshot(
    *, generation_id: object, snapshot: RunSnapshot, source: str
) -> Generation:
    """The one place an upstream run snapshot (webhook body or GET /run) changes a generation.

    Terminal statuses are sticky and refund at most once; intermediate statuses never move
    backwards, so duplicated and out-of-order deliveries are harmless.
    """
    now = timezone.now()
    new_status = UPSTREAM_TO_LOCAL.get(snapshot.status)
    with transaction.atomic():
        generation = Generation.objects.select_for_update().get(pk=generation_id)
        fields = {"last_synced_at", "updated_at"}
        if generation.run_id.lower() != snapshot.run_id.lower():
            if not _run_id_adoptable(generation, snapshot.run_id):
                # Another run's news, or a run not registered yet: never apply it here.
                logger.warning("snapshot for another run ignored", extra=generation.log_context)
                return generation
            # The queue call failed on our side (a timeout) after ComfyDeploy had created the
            # run, so we refunded; its webhooks still come to this generation's URL. Remember
            # the run: from now on only its outputs are recorded.
            generation.run_id = snapshot.run_id
            fields.add("run_id")
        outputs = [
            {
                "url": o.url,
                "type": o.type,
                "output_id": o.output_id[:100] if o.output_id.isprintable() else "",
            }
            for o in snapshot.outputs
            if _output_url_ok(o.url)
        ]
        generation.last_synced_at = now
        if generation.is_terminal or new_status is None:
            if new_status is None:
                logger.warning(
                    "unknown upstream status %r", snapshot.status[:40], extra=generation.log_context
                )
            # A late success for a run we already refunded: keep its images, move no credits.
            if outputs and not generation.outputs:
                generation.outputs = outputs
                fields.add("outputs")
                transaction.on_commit(lambda: outputs_persist_schedule(generation_id=generation.id))
            generation.save(update_fields=sorted(fields))
            return generation
        previous = generation.status
        if outputs:
            generation.outputs = outputs
            fields.add("outputs")
        if new_status in _RANK and _RANK[new_status] < _RANK[previous]:
            generation.save(update_fields=sorted(fields))  # stale intermediate delivery
            return generation
        if new_status == previous:
            generation.progress = max(generation.progress, snapshot.progress)
        else:
            generation.progress = snapshot.progress
        if new_status == Status.SUCCEEDED:
            generation.progress = 1.0
        generation.live_status = (snapshot.live_status or "")[:255]
        generation.status = new_status
        fields |= {"progress", "live_status", "status"}
        if new_status == Status.RUNNING and generation.started_at is None:
            generation.started_at = snapshot.started_at or now
            fields.add("started_at")
        if generation.is_terminal:
            generation.finished_at = snapshot.ended_at or now
            generation.error = _failure_message(new_status)
            fields |= {"finished_at", "error"}
        generation.save(update_fields=sorted(fields))
        if new_status != previous:
            _record_event(generation, source=source, upstream_status=snapshot.status)
        if new_status in REFUNDED_STATUSES:
            generation_refund(generation=generation)
        if new_status == Status.SUCCEEDED and outputs:
            # Upstream image URLs expire after an hour: copy them once the success is committed.
            transaction.on_commit(lambda: outputs_persist_schedule(generation_id=generation.id))
    if new_status != previous:
        logger.info(
            "generation %s -> %s",
            previous,
            new_status,
            extra={**generation.log_context, "source": source},
        )
    return generation


def _fetch_and_apply(generation: Generation, *, source: str) -> Generation:
    try:
        with log_context(**generation.log_context):
            snapshot = get_client().get_run(generation.run_id)
    except ComfyDeployError as exc:
        logger.warning("re-check failed: %s", exc.message, extra=generation.log_context)
        return generation
    if snapshot.run_id and snapshot.run_id != generation.run_id:
        logger.warning("upstream answered for another run", extra=generation.log_context)
        return generation
    return generation_apply_snapshot(generation_id=generation.id, snapshot=snapshot, source=source)


def generation_refresh_if_stale(*, generation: Generation) -> Generation:
    """Re-fetch a run upstream when we have not heard about it for a while (used by polling), so
    a machine that webhooks cannot reach still completes its runs."""
    if generation.is_terminal or not generation.run_id:
        return generation
    cutoff = timezone.now() - timedelta(seconds=settings.POLL_REFRESH_AFTER_SECONDS)
    if generation.last_synced_at and generation.last_synced_at > cutoff:
        return generation
    return _fetch_and_apply(generation, source=Source.POLL)


def generation_recheck(*, generation: Generation, source: str = Source.ADMIN) -> Generation:
    """Re-fetch the run upstream now and apply it (admin "re-check", webhook GET retries)."""
    if generation.is_terminal or not generation.run_id:
        return generation
    return _fetch_and_apply(generation, source=source)


def _cancel_upstream(generation: Generation) -> None:
    if not generation.run_id:
        return
    try:
        with log_context(**generation.log_context):
            get_client().cancel_run(generation.run_id)
    except ComfyDeployError as exc:
        # Best effort: locally the run is over and refunded; a late webhook is ignored.
        logger.warning("upstream cancel failed: %s", exc.message, extra=generation.log_context)


def generation_cancel(
    *, generation: Generation, actor: User | None = None, source: str = Source.ADMIN
) -> Generation:
    """Cancel a run upstream (best effort), mark it cancelled and refund it, exactly once."""
    if generation.is_terminal:
        return generation
    _cancel_upstream(generation)
    # Who cancelled goes into the event's detail: upstream_status is a short status column.
    return _generation_finish(
        generation_id=generation.id,
        status=Status.CANCELLED,
        error=gettext_noop("The run was cancelled. Your credits were refunded."),
        source=source,
        upstream_status="cancelled",
        note=f"(by {actor.email})" if actor is not None else "",
    )


# --- Watchdog -----------------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    failed_unqueued: int = 0
    timed_out: int = 0
    rechecked: int = 0
    changed: int = 0

    def __str__(self) -> str:
        return (
            f"{self.failed_unqueued} never queued (refunded), {self.timed_out} timed out (refunded), "
            f"{self.rechecked} re-checked upstream ({self.changed} changed)"
        )


def generations_reconcile(*, now: datetime | None = None) -> ReconcileReport:
    """One watchdog pass over the runs that webhooks did not settle."""
    now = now or timezone.now()
    report = ReconcileReport()
    stale = now - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS)
    expired = now - timedelta(seconds=settings.RUN_TIMEOUT_SECONDS)

    # Charged but never got a run_id: the process died between the charge and the queue call.
    for generation in Generation.objects.filter(
        status=Status.PENDING, run_id="", created_at__lt=stale
    ):
        done = _generation_finish(
            generation_id=generation.id,
            status=Status.FAILED,
            error=gettext_noop("The run could not be started. Your credits were refunded."),
            source=Source.WATCHDOG,
        )
        report.failed_unqueued += done.status == Status.FAILED

    # Running far too long: upstream only reports a stuck run after 24 h, and sends no webhook.
    for generation in Generation.objects.active().exclude(run_id="").filter(created_at__lt=expired):
        # Finish before cancelling: the cancel makes upstream send a "cancelled" webhook, which
        # must find the run already timed out rather than race this pass to a different status.
        done = _generation_finish(
            generation_id=generation.id,
            status=Status.TIMED_OUT,
            error=gettext_noop(
                "The run took too long and was stopped. Your credits were refunded."
            ),
            source=Source.WATCHDOG,
        )
        if done.status == Status.TIMED_OUT:
            _cancel_upstream(done)
        report.timed_out += done.status == Status.TIMED_OUT

    # Not heard from lately: webhooks get lost, so ask.
    quiet = (
        Generation.objects.active()
        .exclude(run_id="")
        .filter(Q(last_synced_at__lt=stale) | Q(last_synced_at__isnull=True))
    )
    for generation in quiet:
        before = generation.status
        after = _fetch_and_apply(generation, source=Source.WATCHDOG)
        report.rechecked += 1
        report.changed += after.status != before
    if report.failed_unqueued or report.timed_out or report.changed:
        logger.info("watchdog: %s", report)
    return report
