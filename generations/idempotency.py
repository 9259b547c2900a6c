"""``Idempotency-Key`` for ``POST /api/v1/generations``: retry safely, pay once.

The first request with a key inserts a unique (user, key) row and runs; every other request with
that key (concurrent or later, within 24 h) gets the first one's status and body back. The row is
inserted in its own short transaction and *no lock is held while the generation starts*: the
start charges under the balance lock, commits, and then calls ComfyDeploy, which must never happen
inside a longer transaction (the lock would be held across the HTTP call and the webhook could
arrive before the generation exists). So the requests that lose the insert wait by re-reading the
row until its answer is stored, bounded by how long a start can take.

Only answers where a generation was created (201, and 502 "upstream failed, refunded") are kept.
Refusals that charged nothing (400, 402, 404, 429) release the key, so the natural retry — after
buying credits or once a running generation finishes — runs for real.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from generations.models import IdempotencyRecord

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("generations.idempotency")

HEADER = "Idempotency-Key"
KEY_MAX_LENGTH = 255
IDEMPOTENCY_TTL = timedelta(hours=24)
# A generation exists behind these answers; replaying them is what makes a retry safe.
STORED_STATUSES = frozenset({201, 502})
_FIRST_POLL_SECONDS = 0.02
_MAX_POLL_SECONDS = 0.25

Answer = tuple[int, dict[str, Any]]


def _in_progress_limit() -> timedelta:
    """How long a first request may run: the queue call's own timeouts plus a margin."""
    return timedelta(
        seconds=settings.COMFY_DEPLOY_CONNECT_TIMEOUT + settings.COMFY_DEPLOY_READ_TIMEOUT + 15
    )


def request_fingerprint(body: bytes) -> str:
    """SHA-256 of the canonical JSON of a request body (key order and spacing do not matter)."""
    try:
        data = json.loads(body or b"null")
    except (ValueError, RecursionError):
        canonical = bytes(body)
    else:
        canonical = json.dumps(
            data, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    return hashlib.sha256(canonical).hexdigest()


def idempotency_records_prune(*, now: Any = None) -> int:
    """Delete records past their 24 h; returns how many. Cheap (indexed on created_at)."""
    cutoff = (now or timezone.now()) - IDEMPOTENCY_TTL
    deleted, _by_model = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def _claim(*, user: User, key: str, fingerprint: str) -> tuple[IdempotencyRecord | None, bool]:
    """(record, True) if this request inserted the key and must run; (existing record, False) if
    another did; (None, False) if an expired record was just cleared (try again)."""
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(user=user, key=key, request_hash=fingerprint)
    except IntegrityError:
        pass
    else:
        idempotency_records_prune()
        return record, True
    record = IdempotencyRecord.objects.filter(user=user, key=key).first()
    if record is not None and record.created_at < timezone.now() - IDEMPOTENCY_TTL:
        # Expired but not pruned yet: it no longer counts.
        IdempotencyRecord.objects.filter(pk=record.pk, created_at=record.created_at).delete()
        return None, False
    return record, False


def _json_safe(body: dict[str, Any]) -> dict[str, Any]:
    # Stored and live answers go through the same conversion, so a replay is byte-identical.
    return json.loads(json.dumps(body, cls=DjangoJSONEncoder))


def _execute(record: IdempotencyRecord, execute: Callable[[], Answer]) -> Answer:
    try:
        status, body = execute()
    except BaseException:
        # No answer to replay: release the key. (A start that charged and then crashed leaves a
        # pending generation that the watchdog fails and refunds.)
        IdempotencyRecord.objects.filter(pk=record.pk).delete()
        raise
    body = _json_safe(body)
    if status in STORED_STATUSES:
        IdempotencyRecord.objects.filter(pk=record.pk).update(
            response_status=status, response_body=body
        )
    else:
        IdempotencyRecord.objects.filter(pk=record.pk).delete()
    return status, body


def idempotency_run(
    *, user: User, key: str, fingerprint: str, execute: Callable[[], Answer]
) -> Answer:
    """Run ``execute`` at most once per (user, key) and body; replay its answer otherwise."""
    pause = _FIRST_POLL_SECONDS
    while True:
        record, claimed = _claim(user=user, key=key, fingerprint=fingerprint)
        if claimed:
            return _execute(record, execute)
        if record is None:
            continue
        if not hmac.compare_digest(record.request_hash, fingerprint):
            return 409, {
                "error": "idempotency_key_reused",
                "detail": _(
                    "This Idempotency-Key was already used with a different request body. "
                    "Use a new key for a new request."
                ),
            }
        if record.response_status is not None:
            logger.info(
                "idempotent replay", extra={"user_id": user.pk, "status": record.response_status}
            )
            return record.response_status, record.response_body
        if timezone.now() - record.created_at > _in_progress_limit():
            return 409, {
                "error": "idempotency_key_in_progress",
                "detail": _(
                    "The first request with this Idempotency-Key did not finish. Check your "
                    "generations (GET /api/v1/generations) before retrying with a new key."
                ),
            }
        time.sleep(pause)
        pause = min(pause * 2, _MAX_POLL_SECONDS)
