"""The webhook URL is public by necessity, so it is fuzzed: random methods, bodies, sizes, content
types, ids and tokens never produce a 500 and never move credits. Authentic deliveries in any order,
duplicated any number of times, refund a run at most once."""

import json
from urllib.parse import quote

import pytest
from django.db.models import Count, Sum
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from credits.models import CreditBalance, LedgerEntry
from generations.models import Generation, Status
from generations.services import generation_start, webhook_token
from tests.conftest import set_balance_for_test

pytest_plugins = ["tests.simulator_fixtures"]

MAX_BODY = 1024
FUZZ = hypothesis_settings(
    max_examples=250,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Statuses that do not refund: an authentic-looking body with one of these moves no credits.
HARMLESS_STATUSES = ["not-started", "queued", "started", "running", "uploading", "success"]
ANY_STATUS = [*HARMLESS_STATUSES, "failed", "cancelled", "timeout", "", "SUCCESS", "weird", "💥"]


@pytest.fixture(autouse=True)
def _isolated(settings) -> None:
    settings.APP_URL = "http://127.0.0.1:9"  # the simulator's own webhooks go nowhere
    settings.WEBHOOK_MAX_BODY_BYTES = MAX_BODY


@pytest.fixture
def targets(alice, bob, workflow, app_simulator) -> dict:
    """A real, charged, running generation for alice and one for bob."""
    app_simulator.configure(outcome="stuck")
    mine = generation_start(user=alice, workflow=workflow, inputs={"prompt": "a fox"})
    theirs = generation_start(user=bob, workflow=workflow, inputs={"prompt": "an owl"})
    assert mine.status == theirs.status == Status.QUEUED
    return {"mine": mine, "theirs": theirs}


def _money() -> list[tuple]:
    """Every balance and the ledger, to compare before and after."""
    balances = sorted(CreditBalance.objects.values_list("user_id", "balance"))
    ledger = LedgerEntry.objects.aggregate(count=Count("id"), total=Sum("amount"))
    return [*balances, (ledger["count"], ledger["total"])]


def _bodies(run_ids: list[str]):
    snapshot = st.fixed_dictionaries(
        {
            "event_type": st.sampled_from(["run.updated", "run.output", "other"]),
            "status": st.sampled_from(ANY_STATUS),
            "run_id": st.text(max_size=40) | st.sampled_from(["", "not-a-run"]),
        },
        optional={
            "progress": json_values,
            "live_status": json_values,
            "outputs": json_values,
            "id": json_values,
        },
    )
    authentic_but_harmless = st.fixed_dictionaries(
        {"status": st.sampled_from(HARMLESS_STATUSES), "run_id": st.sampled_from(run_ids)},
        optional={"outputs": json_values, "progress": json_values, "live_status": json_values},
    )
    encoded = (snapshot | authentic_but_harmless | json_values).map(
        lambda value: json.dumps(value).encode()
    )
    return encoded | st.binary(max_size=MAX_BODY * 3) | st.text(max_size=200).map(str.encode)


@pytest.mark.django_db
def test_it_never_fails_or_moves_credits_on_random_webhook_requests(targets) -> None:
    mine, theirs = targets["mine"], targets["theirs"]
    real_tokens = [webhook_token(mine.id), webhook_token(theirs.id)]
    client = Client()
    before = _money()

    authentic = st.sampled_from([(str(g.id), webhook_token(g.id)) for g in (mine, theirs)])
    forged = st.tuples(
        st.sampled_from([str(mine.id), str(theirs.id)]) | st.uuids().map(str),
        st.sampled_from(real_tokens)  # another generation's token
        | st.text(min_size=1, max_size=80)
        | st.sampled_from(real_tokens).map(lambda t: t[:-1] + ("A" if t[-1] != "A" else "B")),
    )

    @FUZZ
    @given(
        method=st.sampled_from(["POST"] * 6 + ["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
        # Mostly authentic URLs, so the body handling gets fuzzed, not only the token check.
        url=st.one_of(authentic, authentic, forged),
        body=_bodies([mine.run_id, theirs.run_id]),
        content_type=st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
        ),
        declared_length=st.none() | st.sampled_from(["abc", "0", "1", str(10**12), "-1"]),
    )
    def fuzz(method, url, body, content_type, declared_length) -> None:
        generation_id, token = url
        # A lying Content-Length: junk, negative, shorter than the body, or absurdly long (refused
        # before reading). The test payload must still hold what the view may read.
        extra = {} if declared_length is None else {"CONTENT_LENGTH": declared_length}
        if declared_length == "1" and not body:
            body = b"{"
        path = f"/webhooks/comfydeploy/{generation_id}/{quote(token, safe='')}/"

        response = client.generic(method, path, data=body, content_type=content_type, **extra)

        assert response.status_code < 500, (method, path, body[:200], response.content[:300])
        assert _money() == before

    fuzz()
    for generation in (mine, theirs):
        assert Generation.objects.get(pk=generation.pk).status not in (
            Status.FAILED,
            Status.CANCELLED,
            Status.TIMED_OUT,
        )


@pytest.mark.django_db
def test_it_refunds_at_most_once_whatever_authentic_deliveries_arrive(
    alice, workflow, app_simulator
) -> None:
    app_simulator.configure(outcome="stuck")
    client = Client()

    @hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(statuses=st.lists(st.sampled_from(ANY_STATUS[:9]), min_size=1, max_size=8))
    def deliveries(statuses: list[str]) -> None:
        generation = generation_start(user=alice, workflow=workflow, inputs={"prompt": "a fox"})
        url = f"/webhooks/comfydeploy/{generation.id}/{webhook_token(generation.id)}/"
        for status in statuses:
            body = {"event_type": "run.updated", "status": status, "run_id": generation.run_id}
            response = client.post(url, body, content_type="application/json")
            assert response.status_code == 200
        generation.refresh_from_db()
        refunds = LedgerEntry.objects.filter(
            generation=generation, kind=LedgerEntry.Kind.GENERATION_REFUND
        )
        assert refunds.count() == (1 if generation.is_refunded_status else 0)
        balance = CreditBalance.objects.get(user=alice).balance
        assert balance >= 0
        assert (
            balance
            == LedgerEntry.objects.filter(user=alice).aggregate(total=Sum("amount"))["total"]
        )
        if not generation.is_terminal:
            # Leave room under MAX_CONCURRENT_RUNS for the next example.
            Generation.objects.filter(pk=generation.pk).update(status=Status.SUCCEEDED)

    set_balance_for_test(alice, 1000)
    deliveries()
