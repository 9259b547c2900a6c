from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts.models import User
from credits.services import signup_bonus_grant


@receiver(post_save, sender=User, dispatch_uid="accounts.grant_signup_bonus")
def grant_signup_bonus(
    sender: type[User], instance: User, created: bool, raw: bool, **kwargs: object
) -> None:
    # Hooked on the model, not on allauth's signup, so every way of creating an account
    # (signup form, admin, createsuperuser, seed, API) gets the bonus. The ledger's unique
    # constraint makes it exactly once.
    if created and not raw:
        signup_bonus_grant(user=instance)
