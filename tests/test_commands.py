"""The operator commands (contract): `seed` is idempotent and never invents a fixed admin
password; `adjust_credits <email> <amount> --reason` moves credits through the same service as
the admin and refuses bad input with a clear message and no ledger entry."""

import os
import re
import subprocess
import sys
from decimal import Decimal
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection

from credits.models import CreditBalance, CreditPackage, LedgerEntry
from workflows.models import Workflow

BASE_DIR = Path(__file__).resolve().parent.parent
GENERATED = re.compile(r"admin password \(shown once\): (\S+)")


def _run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _seed_state() -> dict:
    return {
        "packages": sorted(
            CreditPackage.objects.values_list("name", "credits", "price", "currency")
        ),
        "workflows": list(Workflow.objects.values_list("slug", "cost")),
        "users": list(get_user_model().objects.values_list("email", "password")),
        "ledger": LedgerEntry.objects.count(),
    }


# --- seed -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_seeds_packages_the_workflow_and_the_admin_once(settings) -> None:
    settings.ADMIN_EMAIL = "Admin@Example.com"
    settings.ADMIN_PASSWORD = "an admin passphrase 42"

    first = _run("seed")
    state = _seed_state()
    second = _run("seed")

    assert _seed_state() == state
    assert "created admin admin@example.com" in first
    assert "already exists" in second
    prices = dict(CreditPackage.objects.values_list("name", "price"))
    assert prices == {
        "Básico": Decimal("99.00"),
        "Creator": Decimal("249.00"),
        "Pro": Decimal("699.00"),
    }
    credits = list(CreditPackage.objects.order_by("price").values_list("credits", flat=True))
    assert credits == sorted(credits) and credits[0] > 0
    assert all(CreditPackage.objects.values_list("is_active", flat=True))
    workflow = Workflow.objects.get(slug="text-to-image")
    assert workflow.cost == 2 and workflow.is_active
    assert list(workflow.inputs.values_list("input_id", "required")) == [("prompt", True)]
    admin = get_user_model().objects.get(email="admin@example.com")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password("an admin passphrase 42")
    assert LedgerEntry.objects.filter(user=admin, kind="signup_bonus").count() == 1


@pytest.mark.django_db
def test_it_prints_a_random_admin_password_once_when_none_is_configured(settings) -> None:
    settings.ADMIN_EMAIL = "admin@example.com"
    settings.ADMIN_PASSWORD = ""

    first = _run("seed")
    second = _run("seed")

    password = GENERATED.search(first).group(1)
    assert len(password) >= 16
    admin = get_user_model().objects.get(email="admin@example.com")
    assert admin.check_password(password)
    assert password not in admin.password  # stored hashed, never in clear
    assert password not in second and not GENERATED.search(second)
    admin.refresh_from_db()
    assert admin.check_password(password)


@pytest.mark.django_db
def test_it_never_uses_the_same_generated_password_twice(settings) -> None:
    settings.ADMIN_PASSWORD = ""
    passwords = []
    for email in ("one@example.com", "two@example.com"):
        settings.ADMIN_EMAIL = email
        passwords.append(GENERATED.search(_run("seed")).group(1))

    assert passwords[0] != passwords[1]


@pytest.mark.django_db
def test_it_creates_no_admin_without_an_admin_email(settings) -> None:
    settings.ADMIN_EMAIL = ""
    settings.ADMIN_PASSWORD = "an admin passphrase 42"

    output = _run("seed")

    assert "ADMIN_EMAIL is not set" in output
    assert not get_user_model().objects.exists()
    assert CreditPackage.objects.count() == 3


@pytest.mark.django_db
def test_it_keeps_an_operators_changes_when_seeding_again(settings) -> None:
    settings.ADMIN_EMAIL = ""
    _run("seed")
    CreditPackage.objects.filter(name="Pro").update(price=Decimal("799.00"))
    Workflow.objects.filter(slug="text-to-image").update(cost=3)

    _run("seed")

    assert CreditPackage.objects.get(name="Pro").price == Decimal("799.00")
    assert Workflow.objects.get(slug="text-to-image").cost == 3


# --- adjust_credits ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_adjusts_credits_from_the_command_line(alice, staff) -> None:
    output = _run("adjust_credits", "ALICE@example.com", "10", "--reason", "goodwill for ticket 7")

    assert "alice@example.com: +10 credits, balance now 15" in output
    entry = LedgerEntry.objects.get(user=alice, kind=LedgerEntry.Kind.ADMIN_ADJUSTMENT)
    assert (entry.amount, entry.reason, entry.actor) == (10, "goodwill for ticket 7", None)

    _run(
        "adjust_credits",
        "alice@example.com",
        "-3",
        "--reason",
        "chargeback",
        "--actor",
        staff.email,
    )

    entry = LedgerEntry.objects.filter(user=alice).order_by("-id").first()
    assert (entry.amount, entry.balance_after, entry.actor) == (-3, 12, staff)
    assert CreditBalance.objects.get(user=alice).balance == 12


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody@example.com", "5", "--reason", "x"], "No user with the email nobody@example.com"),
        (["alice@example.com", "abc", "--reason", "x"], "whole number"),
        (["alice@example.com", "1.5", "--reason", "x"], "whole number"),
        (["alice@example.com", "0", "--reason", "x"], "cannot be zero"),
        (["alice@example.com", "-6", "--reason", "x"], "negative balance"),
        (["alice@example.com", "99999999", "--reason", "x"], "limited to"),
        (["alice@example.com", "5", "--reason", "   "], "reason is required"),
        (["alice@example.com", "5"], "--reason"),
        (
            ["alice@example.com", "5", "--reason", "x", "--actor", "bob@example.com"],
            "No staff user",
        ),
    ],
)
def test_it_refuses_a_bad_adjustment_from_the_command_line(
    alice, bob, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("adjust_credits", *args, stdout=StringIO(), stderr=StringIO())

    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADMIN_ADJUSTMENT).exists()
    assert CreditBalance.objects.get(user=alice).balance == 5


def _manage(*args: str) -> subprocess.CompletedProcess:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": (
            f"postgres://{quote(db['USER'])}:{quote(db['PASSWORD'])}"
            f"@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "SECRET_KEY": "test-only-secret",
        "LOG_LEVEL": "warning",
        # Commands speak the default UI language (es); these assertions read the English text.
        "LANGUAGE_CODE": "en",
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the subprocess needs a shared database"
)
def test_it_exits_with_an_error_status_for_a_refused_adjustment(alice) -> None:
    # One real process (Django start-up is slow); call_command covers the rest.
    refused = _manage("adjust_credits", "alice@example.com", "-100", "--reason", "support")

    assert refused.returncode == 1
    assert "negative balance" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert CreditBalance.objects.get(user=alice).balance == 5
