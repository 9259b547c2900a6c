import sys

from django.core.management.base import BaseCommand
from django.db.models import F, IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from credits.models import CreditBalance, LedgerEntry


class Command(BaseCommand):
    help = "Verify that every balance equals the sum of its ledger entries; exit 1 listing any mismatch."

    def handle(self, *args: object, **options: object) -> None:
        sums = (
            LedgerEntry.objects.filter(user=OuterRef("user"))
            .values("user")
            .annotate(total=Sum("amount"))
            .values("total")
        )
        mismatched = (
            CreditBalance.objects.annotate(
                ledger_sum=Coalesce(Subquery(sums, output_field=IntegerField()), Value(0))
            )
            .exclude(balance=F("ledger_sum"))
            .select_related("user")
            .order_by("user__email")
        )
        # Entries for users who have no balance row at all are a mismatch too.
        orphans = (
            LedgerEntry.objects.exclude(user__in=CreditBalance.objects.values("user"))
            .values("user__email")
            .annotate(total=Sum("amount"))
        )
        problems = [
            f"{b.user.email}: balance {b.balance} != ledger sum {b.ledger_sum}" for b in mismatched
        ] + [f"{o['user__email']}: no balance row, ledger sum {o['total']}" for o in orphans]
        checked = CreditBalance.objects.count()
        if problems:
            self.stderr.write(f"{len(problems)} of {checked} balances disagree with the ledger:")
            for line in problems:
                self.stderr.write(f"  {line}")
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(f"ledger ok: {checked} balances match their entries"))
