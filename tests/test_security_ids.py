"""Nobody reaches someone else's things by changing a number in a URL: generations (and purchases)
are addressed by random UUIDs, and everything owned by another user answers 404, exactly like
something that does not exist (a 403 would confirm it exists)."""

import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import IntConverter, UUIDConverter

from apikeys.models import ApiKey
from apikeys.services import api_key_create
from generations.models import Generation, Status
from tests.test_csrf import _routes

# Integer ids that may appear in a URL, and why each is safe.
INTEGER_IDS_ALLOWED = {
    # Credit packages are a public catalog: every user may see every one.
    "dashboard/credits/buy/<int:package_id>/": "package_id",
    # Owner-scoped lookup (404 for anyone else, proved below); never shown to other users.
    "dashboard/settings/api-keys/<int:key_id>/revoke/": "key_id",
    # Paired with the generation's UUID and checked against it; the owner's own id.
    "media/generations/<int:user_id>/<uuid:generation_id>/<str:filename>": "user_id",
}


@pytest.fixture(autouse=True)
def _isolated(settings) -> None:
    settings.APP_URL = "http://127.0.0.1:9"


@pytest.fixture
def alices_generation(alice, workflow) -> Generation:
    from django.utils import timezone

    return Generation.objects.create(
        user=alice,
        workflow=workflow,
        cost=2,
        inputs={"prompt": "alice's secret idea"},
        status=Status.SUCCEEDED,
        run_id="run-alice",
        outputs=[{"url": "https://cdn.example.com/alice.png", "type": "image", "output_id": "o"}],
        last_synced_at=timezone.now(),
    )


def test_it_puts_no_enumerable_ids_in_user_facing_urls() -> None:
    for route, _callback in _routes(get_resolver().url_patterns):
        if route.startswith(("admin/", "api/v1/")):
            continue  # staff only; the API validates its UUIDs itself (next test)
        pattern = _pattern_for(route)
        if pattern is None:
            continue
        for name, converter in pattern.pattern.converters.items():
            if name.endswith("_id") and not isinstance(converter, UUIDConverter):
                assert (
                    isinstance(converter, IntConverter) and INTEGER_IDS_ALLOWED.get(route) == name
                ), f"{route}: {name} is enumerable"


def _pattern_for(route: str) -> URLPattern | None:
    def walk(patterns: list, prefix: str = ""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif prefix + str(pattern.pattern) == route:
                yield pattern

    pattern = next(walk(get_resolver().url_patterns), None)
    return pattern if pattern is not None and hasattr(pattern.pattern, "converters") else None


def test_it_documents_generation_ids_as_uuids_in_the_api_schema(client) -> None:
    schema = client.get("/api/v1/openapi.json").json()

    (parameter,) = schema["paths"]["/api/v1/generations/{generation_id}"]["get"]["parameters"]
    assert parameter["schema"]["format"] == "uuid"


@pytest.mark.django_db
def test_it_gives_every_generation_a_random_uuid(alices_generation) -> None:
    assert isinstance(alices_generation.id, uuid.UUID)
    assert alices_generation.id.version == 4


@pytest.mark.django_db
@pytest.mark.parametrize("url_name", ["generation_detail", "generation_card"])
def test_it_answers_404_for_another_users_generation_page(
    alices_generation, bob_client, url_name
) -> None:
    url = reverse(url_name, args=[alices_generation.id])

    response = bob_client.get(url, headers={"HX-Request": "true"})

    assert response.status_code == 404
    assert b"secret idea" not in response.content


@pytest.mark.django_db
def test_it_answers_the_same_404_for_a_generation_that_does_not_exist(
    bob_client, alices_generation
) -> None:
    foreign = bob_client.get(reverse("generation_detail", args=[alices_generation.id]))
    missing = bob_client.get(reverse("generation_detail", args=[uuid.uuid4()]))

    assert foreign.status_code == missing.status_code == 404


@pytest.mark.django_db
def test_it_answers_404_for_another_users_generation_in_the_api(
    alices_generation, bob_client
) -> None:
    foreign = bob_client.get(f"/api/v1/generations/{alices_generation.id}")
    missing = bob_client.get(f"/api/v1/generations/{uuid.uuid4()}")

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    assert alices_generation.id not in {
        g["id"] for g in bob_client.get("/api/v1/generations").json()["results"]
    }


@pytest.mark.django_db
def test_it_answers_404_for_a_malformed_generation_id(bob_client) -> None:
    assert bob_client.get("/dashboard/generations/1/").status_code == 404
    assert bob_client.get("/api/v1/generations/1").status_code in (400, 404, 422)


@pytest.mark.django_db
def test_it_keeps_another_users_generation_out_of_history(alices_generation, bob_client) -> None:
    response = bob_client.get(reverse("history"))

    assert response.status_code == 200
    assert str(alices_generation.id) not in response.content.decode()


@pytest.mark.django_db
def test_it_answers_404_for_another_users_stored_image(
    alices_generation, alice, bob_client
) -> None:
    url = f"/media/generations/{alice.pk}/{alices_generation.id}/output-0.png"

    assert bob_client.get(url).status_code == 404


@pytest.mark.django_db
def test_it_answers_404_when_revoking_another_users_api_key(alice, bob_client) -> None:
    api_key, _token = api_key_create(user=alice, name="alice's script")

    response = bob_client.post(reverse("api_key_revoke", args=[api_key.pk]))

    assert response.status_code == 404
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is None
