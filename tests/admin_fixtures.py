"""Personas and helpers for the admin tests. A module loads the fixtures with
``pytest_plugins = ["tests.admin_fixtures"]`` and imports the helpers.

* ``staff_client``: the ``staff`` persona (a superuser) signed in.
* ``clerk``: staff who may look at users, the ledger, workflows and runs but holds neither
  ``credits.adjust_credits`` nor ``generations.change_generation``.
* ``clerk_client``: the clerk signed in.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.http import HttpResponse
from django.test import Client

from tests.conftest import make_user

CLERK_PERMISSIONS = (
    ("accounts", "view_user"),
    ("accounts", "change_user"),
    ("credits", "view_ledgerentry"),
    ("credits", "view_creditpackage"),
    ("workflows", "view_workflow"),
    ("generations", "view_generation"),
)


def english_client() -> Client:
    """The admin in English, so assertions on messages hold whatever LANGUAGE_CODE is."""
    return Client(headers={"accept-language": "en"})


@pytest.fixture
def staff_client(staff: Any) -> Client:
    client = english_client()
    client.force_login(staff)
    return client


@pytest.fixture
def clerk(db: None) -> Any:
    user = make_user("clerk@example.com", is_staff=True)
    for app_label, codename in CLERK_PERMISSIONS:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


@pytest.fixture
def clerk_client(clerk: Any) -> Client:
    client = english_client()
    client.force_login(clerk)
    return client


def messages_of(response: HttpResponse) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def action_post(action: str, *pks: object, **extra: str) -> dict[str, Any]:
    """The POST body of an admin changelist action over ``pks``."""
    return {"action": action, "_selected_action": [str(pk) for pk in pks], "index": "0", **extra}
