"""Password guessing is throttled: per account (the right password is refused after a few wrong
ones) and per client address (429), with the counters in a cache every worker shares, so a
second gunicorn worker is no second chance. The admin signs in through the same throttled login."""

import re
import uuid
from collections import defaultdict

import httpx
import pytest
from django.core.cache import cache
from django.test import Client

from tests.conftest import PASSWORD, make_user
from tests.test_production_gunicorn import gunicorn

LOGIN = "/accounts/login/"
WRONG = "not the password"
# allauth's defaults: 5 failures per account per 5 minutes, 30 login posts per address per minute.
FAILURES_PER_ACCOUNT = 5
POSTS_PER_ADDRESS = 30


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.django_db
def test_it_refuses_even_the_right_password_after_repeated_failures(alice) -> None:
    client = Client(headers={"accept-language": "en"})
    for _ in range(FAILURES_PER_ACCOUNT):
        response = client.post(LOGIN, {"login": alice.email, "password": WRONG})
        assert response.status_code == 200 and not _signed_in(client)

    response = client.post(LOGIN, {"login": alice.email, "password": PASSWORD})

    assert not _signed_in(client)
    assert b"Too many failed login attempts" in response.content


@pytest.mark.django_db
def test_it_does_not_lock_out_an_account_after_fewer_failures(alice) -> None:
    client = Client()
    for _ in range(FAILURES_PER_ACCOUNT - 1):
        client.post(LOGIN, {"login": alice.email, "password": WRONG})

    client.post(LOGIN, {"login": alice.email, "password": PASSWORD})

    assert _signed_in(client)


@pytest.mark.django_db
def test_it_answers_429_to_an_address_that_keeps_posting_logins(alice) -> None:
    client = Client()
    statuses = [
        client.post(LOGIN, {"login": f"guess{i}@example.com", "password": WRONG}).status_code
        for i in range(POSTS_PER_ADDRESS + 3)
    ]

    assert 429 not in statuses[:POSTS_PER_ADDRESS]
    assert statuses[POSTS_PER_ADDRESS:] == [429, 429, 429]


@pytest.mark.django_db
def test_it_sends_the_admin_login_through_the_throttled_login(staff) -> None:
    client = Client()

    response = client.post("/admin/login/", {"username": staff.email, "password": PASSWORD})

    # The admin's own password form is never processed: it hands over to allauth's login.
    assert response.status_code == 302
    assert response["Location"].startswith(LOGIN)
    assert not _signed_in(client)


@pytest.mark.django_db
def test_it_keeps_signed_in_non_staff_out_of_the_admin(bob_client) -> None:
    assert bob_client.get("/admin/login/").status_code == 403
    response = bob_client.get("/admin/", follow=True)
    assert response.status_code == 403


# --- Across processes --------------------------------------------------------------------------


REDIS_TEST_URL = "redis://127.0.0.1:6379/15"


def _redis_or_skip():
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    return client


@pytest.fixture(params=["database", "redis"])
def shared_cache(request, transactional_db) -> dict[str, str]:
    """The cache the server processes share: the database (default) or Redis (``REDIS_URL``).
    Committed counters are cleaned up afterwards so no other test inherits a throttled address."""
    if request.param == "redis":
        client = _redis_or_skip()
        client.flushdb()
        yield {"REDIS_URL": REDIS_TEST_URL}
        client.flushdb()
        return
    cache.clear()
    yield {}
    cache.clear()


def _csrf(client: httpx.Client, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, "the login form has no CSRF token"
    return match.group(1)


def test_it_throttles_logins_across_two_gunicorn_workers(shared_cache: dict[str, str]) -> None:
    make_user("alice@example.com")
    # The proxy's client-address header (nginx's X-Real-IP), as configured in production; an
    # address of its own keeps this test's counters apart from every other test's.
    address = "203.0.113.77"
    with gunicorn(
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="2",
        TRUSTED_CLIENT_IP_HEADER="X-Real-IP",
        **shared_cache,
    ) as server:
        statuses: list[int] = []
        request_ids: list[str] = []

        def attempt() -> int:
            # A new connection per attempt, so the kernel hands attempts to either worker.
            with httpx.Client(base_url=server.url, headers={"X-Real-IP": address}) as client:
                token = _csrf(client, LOGIN)
                request_id = uuid.uuid4().hex
                response = client.post(
                    LOGIN,
                    data={
                        "login": "alice@example.com",
                        "password": WRONG,
                        "csrfmiddlewaretoken": token,
                    },
                    headers={"X-Request-ID": request_id},
                )
            statuses.append(response.status_code)
            request_ids.append(request_id)
            return response.status_code

        for _ in range(POSTS_PER_ADDRESS + 5):
            attempt()
        # Keep guessing until both workers have been seen refusing (bounded).
        refused_by: dict[int, int] = defaultdict(int)
        for _ in range(60):
            by_id = {r["request_id"]: r for r in server.access_log()}
            refused_by.clear()
            for request_id, status in zip(request_ids, statuses, strict=True):
                record = by_id.get(request_id)
                if record is not None and status == 429:
                    refused_by[record["pid"]] += 1
            if len(refused_by) >= 2:
                break
            attempt()
        answered_by = {r["pid"] for r in server.access_log() if r["method"] == "POST"}

    assert all(status < 500 for status in statuses)
    # One shared counter: exactly the limit gets through, whichever worker answers; per-worker
    # counters would have let up to twice as many through.
    assert 429 not in statuses[:POSTS_PER_ADDRESS]
    assert set(statuses[POSTS_PER_ADDRESS:]) == {429}
    assert len(answered_by) == 2, "both workers should have answered login attempts"
    assert len(refused_by) == 2, "both workers should have refused once the limit was reached"
