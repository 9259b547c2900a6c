"""Background tasks (django.tasks, run by `manage.py db_worker`)."""

from datetime import timedelta

from django.conf import settings
from django.tasks import task
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from generations.idempotency import idempotency_records_prune
from generations.services import generations_reconcile


def _watchdog_scheduled() -> bool:
    return DBTaskResult.objects.filter(task_path=watchdog.module_path, status="READY").exists()


def watchdog_schedule() -> bool:
    """Enqueue the next watchdog pass unless one is already waiting. Returns True if enqueued."""
    if _watchdog_scheduled():
        return False
    run_after = timezone.now() + timedelta(seconds=settings.WATCHDOG_INTERVAL_SECONDS)
    watchdog.using(run_after=run_after).enqueue()
    return True


@task()
def watchdog() -> str:
    """One reconcile pass (and expired Idempotency-Keys dropped), then schedule the next: a
    periodic task without a separate scheduler."""
    try:
        report = generations_reconcile()
        idempotency_records_prune()
    finally:
        watchdog_schedule()
    return str(report)
