"""Shared personas and fixtures. alice owns things; bob must never see them."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import translation

from credits.models import CreditBalance
from workflows.models import Workflow, WorkflowInput

PASSWORD = "correct horse battery staple"


def make_user(email: str, **extra: object):
    return get_user_model().objects.create_user(email=email, password=PASSWORD, **extra)


def set_balance_for_test(user, balance: int) -> None:
    """Give a persona an exact balance through the ledger (never by editing the balance row)."""
    from credits.services import credits_adjust

    current = CreditBalance.objects.get(user=user).balance
    if balance != current:
        credits_adjust(user=user, amount=balance - current, reason="test set-up", actor=None)


@pytest.fixture
def alice(db):
    return make_user("alice@example.com")


@pytest.fixture
def bob(db):
    return make_user("bob@example.com")


@pytest.fixture
def staff(db):
    """A staff member with every permission (a superuser)."""
    return get_user_model().objects.create_superuser(email="staff@example.com", password=PASSWORD)


@pytest.fixture
def alice_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def make_workflow(
    slug: str = "text-to-image", cost: int = 2, deployment_id: str | None = None
) -> Workflow:
    from generations.simulator import SIMULATOR_DEPLOYMENT_ID

    workflow = Workflow.objects.create(
        name="Text to image",
        slug=slug,
        description="Describe a picture",
        deployment_id=deployment_id or SIMULATOR_DEPLOYMENT_ID,
        cost=cost,
    )
    WorkflowInput.objects.create(
        workflow=workflow,
        input_id="prompt",
        label="Prompt",
        type=WorkflowInput.Type.LONG_TEXT,
        required=True,
    )
    return workflow


@pytest.fixture
def workflow(db) -> Workflow:
    return make_workflow()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # The real hasher is deliberately slow; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _english_outside_requests():
    # Messages built outside a request (services, commands) use the active language; pin it so a
    # test never depends on which language the previous test's request left activated. Requests
    # still pick their language through LocaleMiddleware (default LANGUAGE_CODE = "es").
    with translation.override("en"):
        yield
