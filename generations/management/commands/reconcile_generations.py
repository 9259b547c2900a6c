from django.core.management.base import BaseCommand, CommandParser

from generations.services import generations_reconcile
from generations.tasks import watchdog_schedule


class Command(BaseCommand):
    help = (
        "Run one watchdog pass: fail and refund runs that never got queued, re-check runs not heard "
        "from for RUN_STALE_AFTER_SECONDS, cancel and refund runs older than RUN_TIMEOUT_SECONDS."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--schedule",
            action="store_true",
            help="Instead, make sure the periodic watchdog task is queued for the background worker.",
        )

    def handle(self, *args: object, schedule: bool, **options: object) -> None:
        if schedule:
            queued = watchdog_schedule()
            self.stdout.write("watchdog task queued" if queued else "watchdog task already queued")
            return
        report = generations_reconcile()
        self.stdout.write(self.style.SUCCESS(f"reconciled: {report}"))
