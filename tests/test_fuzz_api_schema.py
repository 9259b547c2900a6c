"""The JSON API is fuzzed from its own OpenAPI schema with schemathesis: a signed-in user (session
cookie + CSRF header, as a browser script would) sends generated requests, valid and invalid, to
every operation of a live server. No answer is a 5xx, and every answer matches the schema: a
documented status code, the documented content type and a body of the documented shape."""

import pytest
import schemathesis
from django.test import Client
from django.utils.crypto import get_random_string
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import make_user, make_workflow, set_balance_for_test

pytest_plugins = ["tests.simulator_fixtures"]

# Bounded so the whole module stays well under a minute.
EXAMPLES_PER_OPERATION = 40
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def signed_in(live_server, app_simulator, settings, transactional_db) -> dict:
    """Alice with credits, a workflow, the simulator completing runs through real webhooks."""
    settings.APP_URL = live_server.url
    alice = make_user("alice@example.com")
    set_balance_for_test(alice, 10_000)
    make_workflow()
    browser = Client()
    browser.force_login(alice)
    csrf = get_random_string(32)
    return {
        "cookies": {"sessionid": browser.cookies["sessionid"].value, "csrftoken": csrf},
        "headers": {"X-CSRFToken": csrf},
        "schema": schemathesis.openapi.from_url(f"{live_server.url}/api/v1/openapi.json"),
    }


def _fuzz(
    signed_in: dict,
    mode: schemathesis.GenerationMode,
    checks: list,
    *,
    examples: int = EXAMPLES_PER_OPERATION,
) -> None:
    operations = [result.ok() for result in signed_in["schema"].get_all_operations()]
    assert {op.path for op in operations} >= {"/api/v1/me", "/api/v1/generations", "/api/v1/ledger"}
    for operation in operations:

        @hypothesis_settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers=signed_in["headers"],
                cookies=signed_in["cookies"],
                checks=checks,
                timeout=30,
            )

        call()


@pytest.mark.django_db(transaction=True)
def test_it_answers_valid_requests_within_the_schema(signed_in) -> None:
    _fuzz(signed_in, schemathesis.GenerationMode.POSITIVE, CONFORMANCE)


@pytest.mark.django_db(transaction=True)
def test_it_rejects_invalid_requests_within_the_schema(signed_in) -> None:
    # Conformance only: schemathesis's negative_data_rejection would flag pydantic's lax parsing
    # (``page=0.0`` read as 0), which is harmless.
    _fuzz(signed_in, schemathesis.GenerationMode.NEGATIVE, CONFORMANCE)


@pytest.mark.django_db(transaction=True)
def test_it_answers_anonymous_requests_within_the_schema(signed_in) -> None:
    anonymous = {**signed_in, "cookies": {}, "headers": {}}

    _fuzz(anonymous, schemathesis.GenerationMode.POSITIVE, CONFORMANCE, examples=10)
