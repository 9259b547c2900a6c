"""`manage.py check_ledger` (contract): exit 0 when every balance equals the sum of its entries,
exit 1 listing every user whose balance disagrees (e.g. after someone edited a balance by hand)."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.db import connection

from credits.models import CreditBalance
from credits.services import credits_adjust, generation_charge, generation_refund
from generations.models import Generation
from workflows.models import Workflow

BASE_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
def busy_ledger(alice, bob, staff) -> None:
    """A realistic history: bonuses, a charge, a refund, adjustments."""
    workflow = Workflow.objects.create(
        name="Text to image", slug="t2i", deployment_id="test-deployment", cost=2
    )
    for user in (alice, bob):
        generation = Generation.objects.create(user=user, workflow=workflow, cost=2, inputs={})
        generation_charge(generation=generation)
    generation_refund(generation=Generation.objects.get(user=bob))
    credits_adjust(user=alice, amount=10, reason="goodwill", actor=staff)


def _check_ledger() -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("check_ledger", stdout=out, stderr=err)
    except SystemExit as exc:
        return exc.code, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def _corrupt_balance(user, delta: int) -> None:
    # Behind the ORM's back, the way a hand-written SQL fix would do it.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE credits_creditbalance SET balance = balance + %s WHERE user_id = %s",
            [delta, user.pk],
        )


@pytest.mark.django_db
def test_it_exits_zero_on_a_consistent_ledger(busy_ledger) -> None:
    code, out, err = _check_ledger()

    assert code == 0
    assert "ledger ok" in out
    assert err == ""


@pytest.mark.django_db
def test_it_exits_one_and_names_the_user_whose_balance_was_edited(busy_ledger, alice, bob) -> None:
    _corrupt_balance(alice, 7)

    code, _, err = _check_ledger()

    assert code == 1
    assert "alice@example.com" in err
    assert "balance 20 != ledger sum 13" in err
    assert "bob@example.com" not in err
    assert "staff@example.com" not in err


@pytest.mark.django_db
def test_it_lists_every_user_that_disagrees(busy_ledger, alice, bob) -> None:
    _corrupt_balance(alice, -3)
    _corrupt_balance(bob, 1)

    code, _, err = _check_ledger()

    assert code == 1
    assert "alice@example.com" in err and "bob@example.com" in err
    assert "2 of 3 balances" in err


@pytest.mark.django_db
def test_it_reports_entries_of_a_user_without_a_balance_row(busy_ledger, alice) -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM credits_creditbalance WHERE user_id = %s", [alice.pk])

    code, _, err = _check_ledger()

    assert code == 1
    assert "alice@example.com: no balance row, ledger sum 13" in err


@pytest.mark.django_db
def test_it_exits_zero_again_once_the_balance_is_put_back(busy_ledger, alice) -> None:
    _corrupt_balance(alice, 7)
    assert _check_ledger()[0] == 1

    _corrupt_balance(alice, -7)

    assert _check_ledger()[0] == 0
    assert CreditBalance.objects.get(user=alice).balance == 13


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the subprocess needs a shared database"
)
def test_it_sets_the_process_exit_status_for_scripts_and_cron(busy_ledger, alice) -> None:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": (
            f"postgres://{quote(db['USER'])}:{quote(db['PASSWORD'])}"
            f"@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "SECRET_KEY": "test-only-secret",
    }

    _corrupt_balance(alice, 7)

    # One real process (Django start-up is slow); call_command covers the exit-0 case.
    corrupted = subprocess.run(
        [sys.executable, "manage.py", "check_ledger"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert corrupted.returncode == 1, corrupted.stderr
    assert "alice@example.com: balance 20 != ledger sum 13" in corrupted.stderr
