"""A new account gets SIGNUP_BONUS_CREDITS as one signup_bonus ledger entry: exactly once,
however the account is created (allauth's signup view, createsuperuser, the ORM)."""

import threading

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection

from credits.models import CreditBalance, LedgerEntry
from credits.services import signup_bonus_grant

PASSWORD = "correct horse battery staple"
WAIT = 30


def _sign_up(client, email: str):
    # ``next`` keeps this test about the account, not about where the dashboard lives.
    return client.post(
        "/accounts/signup/",
        {"email": email, "password1": PASSWORD, "password2": PASSWORD, "next": "/healthz"},
    )


def _bonuses(user):
    return LedgerEntry.objects.filter(user=user, kind=LedgerEntry.Kind.SIGNUP_BONUS)


@pytest.mark.django_db
def test_it_gives_five_credits_once_on_signup_through_allauth(client) -> None:
    response = _sign_up(client, "carol@example.com")

    assert response.status_code == 302, response.content[:2000]
    user = get_user_model().objects.get(email="carol@example.com")
    assert client.session["_auth_user_id"] == str(user.pk)
    entries = list(LedgerEntry.objects.filter(user=user))
    assert len(entries) == 1
    (entry,) = entries
    assert (entry.kind, entry.amount, entry.balance_after) == (LedgerEntry.Kind.SIGNUP_BONUS, 5, 5)
    assert entry.actor is None and entry.generation is None
    assert CreditBalance.objects.get(user=user).balance == 5


@pytest.mark.django_db
def test_it_gives_no_second_bonus_for_a_repeated_signup_with_the_same_email(client) -> None:
    assert _sign_up(client, "carol@example.com").status_code == 302
    client.logout()

    response = _sign_up(client, "Carol@Example.com")

    assert response.status_code == 200  # the form again, with an error
    assert get_user_model().objects.filter(email__iexact="carol@example.com").count() == 1
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.SIGNUP_BONUS).count() == 1


@pytest.mark.django_db
def test_it_gives_the_configured_bonus(client, settings) -> None:
    settings.SIGNUP_BONUS_CREDITS = 12
    _sign_up(client, "carol@example.com")

    user = get_user_model().objects.get(email="carol@example.com")
    assert list(_bonuses(user).values_list("amount", flat=True)) == [12]
    assert CreditBalance.objects.get(user=user).balance == 12


@pytest.mark.django_db
def test_it_gives_nothing_when_the_bonus_is_zero(client, settings) -> None:
    settings.SIGNUP_BONUS_CREDITS = 0
    response = _sign_up(client, "carol@example.com")

    assert response.status_code == 302
    user = get_user_model().objects.get(email="carol@example.com")
    assert not LedgerEntry.objects.filter(user=user).exists()
    # The balance row still exists, so the first charge has a row to lock.
    assert CreditBalance.objects.get(user=user).balance == 0


@pytest.mark.django_db
def test_it_gives_a_superuser_the_bonus_once(monkeypatch) -> None:
    User = get_user_model()
    admin = User.objects.create_superuser(email="root@example.com", password=PASSWORD)
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    call_command("createsuperuser", interactive=False, email="ops@example.com", verbosity=0)
    ops = User.objects.get(email="ops@example.com")

    for user in (admin, ops):
        assert user.is_superuser
        assert _bonuses(user).count() == 1
        assert CreditBalance.objects.get(user=user).balance == 5


@pytest.mark.django_db
def test_it_does_not_grant_again_when_the_account_is_saved_or_granted_again(alice) -> None:
    alice.save()
    alice.is_active = False
    alice.save(update_fields=["is_active"])

    assert signup_bonus_grant(user=alice) is None

    assert _bonuses(alice).count() == 1
    assert CreditBalance.objects.get(user=alice).balance == 5


@pytest.mark.django_db(transaction=True)
def test_it_grants_once_when_granted_from_many_threads_at_once(settings) -> None:
    settings.SIGNUP_BONUS_CREDITS = 0
    user = get_user_model().objects.create_user(email="dave@example.com", password=None)
    settings.SIGNUP_BONUS_CREDITS = 5
    barrier = threading.Barrier(10)
    answers: list[object] = []
    lock = threading.Lock()

    def grant() -> None:
        try:
            barrier.wait(WAIT)
            answer: object = signup_bonus_grant(user=user)
        except Exception as exc:
            answer = f"error: {exc!r}"
        finally:
            connection.close()
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=grant) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)

    assert len(answers) == 10
    assert sum(isinstance(answer, LedgerEntry) for answer in answers) == 1, answers
    assert answers.count(None) == 9
    assert _bonuses(user).count() == 1
    assert CreditBalance.objects.get(user=user).balance == 5
