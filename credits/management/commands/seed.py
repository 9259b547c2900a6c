import secrets
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from credits.models import CreditPackage
from generations.simulator import SIMULATOR_DEPLOYMENT_ID
from workflows.models import Workflow, WorkflowInput

PACKAGES = [
    # name, credits, price (USD), position
    ("Básico", 500, Decimal("99.00"), 1),
    ("Creator", 1500, Decimal("249.00"), 2),
    ("Pro", 5000, Decimal("699.00"), 3),
]


class Command(BaseCommand):
    help = "Create the credit packages, the text-to-image workflow and the admin user (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        with transaction.atomic():
            for name, credits, price, position in PACKAGES:
                _, created = CreditPackage.objects.get_or_create(
                    name=name,
                    defaults={
                        "credits": credits,
                        "price": price,
                        "currency": "USD",
                        "position": position,
                    },
                )
                self._say(created, f"package {name}")
            workflow, created = Workflow.objects.get_or_create(
                slug="text-to-image",
                defaults={
                    "name": "Text to image",
                    "description": "Describe a picture in words and get a 512×512 image.",
                    "deployment_id": SIMULATOR_DEPLOYMENT_ID,
                    "cost": 2,
                },
            )
            self._say(created, "workflow text-to-image")
            WorkflowInput.objects.get_or_create(
                workflow=workflow,
                input_id="prompt",
                defaults={
                    "label": "Prompt",
                    "type": WorkflowInput.Type.LONG_TEXT,
                    "required": True,
                    "help_text": "What should the picture show?",
                },
            )
        self._seed_admin()

    def _seed_admin(self) -> None:
        email = settings.ADMIN_EMAIL.lower()
        if not email:
            self.stdout.write("ADMIN_EMAIL is not set: no admin user created.")
            return
        User = get_user_model()
        if User.objects.filter(email__iexact=email).exists():
            self.stdout.write(f"admin {email} already exists (password unchanged)")
            return
        password = settings.ADMIN_PASSWORD
        generated = not password
        if generated:
            password = secrets.token_urlsafe(16)
        User.objects.create_superuser(email=email, password=password)
        self.stdout.write(self.style.SUCCESS(f"created admin {email}"))
        if generated:
            # Printed once, never stored in clear: there is no default password.
            self.stdout.write(self.style.WARNING(f"admin password (shown once): {password}"))

    def _say(self, created: bool, what: str) -> None:
        self.stdout.write(f"{'created' if created else 'exists '} {what}")
