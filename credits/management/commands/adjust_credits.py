from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from credits.services import CreditError, credits_adjust


class Command(BaseCommand):
    help = (
        "Add (positive) or remove (negative) credits for a user, with a reason, through the ledger."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        # A string, so "-5" and "abc" reach the service's own validation and messages.
        parser.add_argument("amount")
        parser.add_argument("--reason", required=True, help="Recorded in the ledger.")
        parser.add_argument("--actor", help="Email of the staff member responsible (optional).")

    def handle(
        self,
        *args: object,
        email: str,
        amount: str,
        reason: str,
        actor: str | None,
        **options: object,
    ) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(email__iexact=email)
        except User.DoesNotExist:
            raise CommandError(f"No user with the email {email}.") from None
        actor_user = None
        if actor:
            actor_user = User.objects.filter(email__iexact=actor, is_staff=True).first()
            if actor_user is None:
                raise CommandError(f"No staff user with the email {actor}.")
        try:
            entry = credits_adjust(user=user, amount=amount, reason=reason, actor=actor_user)
        except CreditError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"{user.email}: {entry.amount:+d} credits, balance now {entry.balance_after}"
            )
        )
