"""Personal API keys: created on the settings page and shown once, stored only as a hash, they
authenticate /api/v1/ with ``Authorization: Bearer`` (no CSRF token) until revoked, and only ever
for their owner's data."""
# ruff: noqa: F811 (pytest fixtures are imported by name and requested as arguments)

import hashlib
import re

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from apikeys.models import ApiKey
from apikeys.services import api_key_create
from credits.models import CreditBalance
from generations.models import Generation
from tests.simulator_fixtures import app_simulator, simulator  # noqa: F401  (fixtures)


def _bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def _create_on_page(client: Client, name: str) -> str:
    response = client.post(reverse("api_keys"), {"name": name})
    assert response.status_code == 200
    found = re.search(r'value="(cc_[A-Za-z0-9_-]+)"', response.content.decode())
    assert found, "the new key is shown on the page"
    return found.group(1)


def _every_stored_value() -> str:
    """Every row of every table, as text: where a leaked key would be."""
    dump = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT t::text FROM "{table}" AS t')
            dump.extend(row[0] for row in cursor.fetchall())
    return "\n".join(dump)


@pytest.mark.django_db
def test_it_shows_a_new_key_once_and_stores_only_its_hash(alice, alice_client) -> None:
    token = _create_on_page(alice_client, "laptop script")

    api_key = ApiKey.objects.get(user=alice)
    assert api_key.name == "laptop script"
    assert token.startswith(f"cc_{api_key.prefix}_")
    secret = token.removeprefix(f"cc_{api_key.prefix}_")
    assert len(secret) >= 43  # 256 random bits, url-safe base64
    assert api_key.key_hash == hashlib.sha256(token.encode()).hexdigest()
    stored = _every_stored_value()
    assert token not in stored
    assert secret not in stored

    # Listed by its prefix from now on, never in full again.
    page = alice_client.get(reverse("api_keys"))
    assert page.status_code == 200
    assert page["Cache-Control"].startswith("max-age=0")
    html = page.content.decode()
    assert "laptop script" in html
    assert api_key.display_prefix in html
    assert secret not in html


@pytest.mark.django_db
def test_it_authenticates_the_api_with_a_bearer_key_and_no_csrf_token(
    alice,
    workflow,
    app_simulator,
) -> None:
    _api_key, token = api_key_create(user=alice, name="ci")
    client = Client(enforce_csrf_checks=True)  # no session, no CSRF cookie or header

    me = client.get("/api/v1/me", **_bearer(token))
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"

    started = client.post(
        "/api/v1/generations",
        {"workflow": workflow.slug, "inputs": {"prompt": "a red fox in snow"}},
        content_type="application/json",
        **_bearer(token),
    )
    assert started.status_code == 201, started.content
    assert started.json()["status"] == "queued"
    assert Generation.objects.get(user=alice).cost == 2
    assert CreditBalance.objects.get(user=alice).balance == 3
    assert ApiKey.objects.get(user=alice).last_used_at is not None


@pytest.mark.django_db
def test_it_answers_401_to_a_revoked_or_unknown_key(alice, alice_client) -> None:
    token = _create_on_page(alice_client, "old script")
    api_key = ApiKey.objects.get(user=alice)
    assert Client().get("/api/v1/me", **_bearer(token)).status_code == 200

    revoked = alice_client.post(reverse("api_key_revoke", args=[api_key.pk]))
    assert revoked.status_code == 302
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None

    for presented in (token, "cc_00000000_" + "x" * 43, "not-even-our-format"):
        response = Client().get("/api/v1/me", **_bearer(presented))
        assert response.status_code == 401
        assert response.json()["error"] == "not_authenticated"
        assert response.json()["detail"]
    # A bad key is an error even next to a valid session: it never falls back to the cookie.
    assert alice_client.get("/api/v1/me", **_bearer(token)).status_code == 401
    # The page still lists it, as revoked.
    page = alice_client.get(reverse("api_keys")).content.decode()
    assert api_key.display_prefix in page
    assert "badge-cancelled" in page
    assert reverse("api_key_revoke", args=[api_key.pk]) not in page

    # From the page with htmx: the panel is swapped in place and says what happened.
    other, other_token = api_key_create(user=alice, name="second script")
    panel = alice_client.post(reverse("api_key_revoke", args=[other.pk]), HTTP_HX_REQUEST="true")
    assert panel.status_code == 200
    assert "<html" not in panel.content.decode()
    assert "second script" in panel.content.decode()
    assert Client().get("/api/v1/me", **_bearer(other_token)).status_code == 401


@pytest.mark.django_db
def test_it_never_lets_bobs_key_near_alices_things(
    alice, bob, alice_client, bob_client, workflow
) -> None:
    alices_generation = Generation.objects.create(
        user=alice,
        workflow=workflow,
        cost=2,
        inputs={"prompt": "alice's secret"},
        status="succeeded",
    )
    _create_on_page(alice_client, "alice's key")
    alices_key = ApiKey.objects.get(user=alice)
    _bobs_key, bobs_token = api_key_create(user=bob, name="bob's key")
    client = Client()

    assert client.get("/api/v1/me", **_bearer(bobs_token)).json()["email"] == "bob@example.com"
    assert client.get("/api/v1/generations", **_bearer(bobs_token)).json()["results"] == []
    detail = client.get(f"/api/v1/generations/{alices_generation.id}", **_bearer(bobs_token))
    assert detail.status_code == 404
    assert b"alice's secret" not in detail.content
    assert (
        client.get("/api/v1/ledger", **_bearer(bobs_token)).json()["results"][0]["kind"]
        == "signup_bonus"
    )
    assert all(
        e["generation"] is None
        for e in client.get("/api/v1/ledger", **_bearer(bobs_token)).json()["results"]
    )

    # Nor can bob see or revoke alice's key on his settings page.
    assert "alice&#x27;s key" not in bob_client.get(reverse("api_keys")).content.decode()
    assert bob_client.post(reverse("api_key_revoke", args=[alices_key.pk])).status_code == 404
    alices_key.refresh_from_db()
    assert alices_key.revoked_at is None


@pytest.mark.django_db
def test_it_records_last_use_at_most_once_a_minute(alice, django_assert_num_queries) -> None:
    _api_key, token = api_key_create(user=alice, name="busy script")
    client = Client()
    client.get("/api/v1/me", **_bearer(token))
    first_use = ApiKey.objects.get(user=alice).last_used_at
    assert first_use is not None

    # The next request within the minute reads the key and writes nothing.
    with django_assert_num_queries(3):  # the key (with its user), the balance, the active count
        assert client.get("/api/v1/me", **_bearer(token)).status_code == 200
    assert ApiKey.objects.get(user=alice).last_used_at == first_use


@pytest.mark.django_db
def test_it_asks_for_a_name_and_requires_sign_in(alice_client) -> None:
    response = alice_client.post(reverse("api_keys"), {"name": "   "})
    assert response.status_code == 400
    assert not ApiKey.objects.exists()
    anonymous = Client().get(reverse("api_keys"))
    assert anonymous.status_code == 302
    assert "/accounts/login/" in anonymous["Location"]


@pytest.mark.django_db
def test_it_documents_the_bearer_scheme_in_the_openapi_schema() -> None:
    schema = Client().get("/api/v1/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["ApiKeyAuth"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert {"ApiKeyAuth": []} in schema["paths"]["/api/v1/me"]["get"]["security"]
