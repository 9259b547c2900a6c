"""A workflow's inputs are validated against its schema before anything is charged: wrong types,
missing or over-long values and unknown choices are a 400 with per-field messages; unknown keys and
client-sent cost/status fields are dropped. Nothing bad ever reaches ComfyDeploy or the ledger."""

import json

import pytest
from django.http import QueryDict

from generations.models import Generation
from tests.conftest import make_workflow
from tests.pipeline_fixtures import API, balance, post_json
from workflows.inputs import InputsInvalid, inputs_validate
from workflows.models import Workflow, WorkflowInput

pytest_plugins = ["tests.pipeline_fixtures"]
pytestmark = [pytest.mark.usefixtures("pipeline_settings"), pytest.mark.django_db]

QUEUE = "/api/run/deployment/queue"
T = WorkflowInput.Type


@pytest.fixture
def workflow() -> Workflow:
    workflow = make_workflow()  # prompt: required long text
    fields = [
        ("seed", T.INTEGER, {"default": "42", "min_value": 0, "max_value": 1000}),
        ("strength", T.NUMBER, {"min_value": 0, "max_value": 1}),
        ("hires", T.BOOLEAN, {}),
        ("style", T.CHOICE, {"choices": "photo\nsketch", "default": "photo"}),
        ("negative", T.TEXT, {"max_length": 50}),
        ("image", T.IMAGE_URL, {}),
    ]
    for position, (input_id, kind, extra) in enumerate(fields, start=1):
        WorkflowInput.objects.create(
            workflow=workflow,
            input_id=input_id,
            label=input_id.title(),
            type=kind,
            position=position,
            **extra,
        )
    return workflow


def _post(client, inputs: object = None, **body: object):
    payload = {"workflow": "text-to-image", **body}
    if inputs is not None:
        payload["inputs"] = inputs
    return post_json(client, f"{API}/generations", payload)


def _assert_nothing_happened(alice, sim) -> None:
    assert balance(alice) == 5
    assert not Generation.objects.exists()
    assert sim.count_requests("POST", QUEUE) == 0


def _queued_inputs(sim) -> dict:
    (request,) = [r for r in sim.requests if r.path == QUEUE]
    return json.loads(request.body)["inputs"]


INVALID = {
    "missing_required": ({}, "prompt"),
    "empty_required": ({"prompt": ""}, "prompt"),
    "blank_required": ({"prompt": "   "}, "prompt"),
    "null_required": ({"prompt": None}, "prompt"),
    "too_long": ({"prompt": "x" * 2001}, "prompt"),
    "text_as_number": ({"prompt": 5}, "prompt"),
    "text_as_boolean": ({"prompt": True}, "prompt"),
    "text_as_list": ({"prompt": ["a red fox"]}, "prompt"),
    "text_as_object": ({"prompt": {"text": "a red fox", "cost": 0}}, "prompt"),
    "integer_as_string": ({"prompt": "fox", "seed": "5"}, "seed"),
    "integer_as_float": ({"prompt": "fox", "seed": 5.5}, "seed"),
    "integer_as_boolean": ({"prompt": "fox", "seed": True}, "seed"),
    "integer_as_object": ({"prompt": "fox", "seed": {"value": 5}}, "seed"),
    "integer_below_minimum": ({"prompt": "fox", "seed": -1}, "seed"),
    "integer_above_maximum": ({"prompt": "fox", "seed": 1001}, "seed"),
    "integer_huge": ({"prompt": "fox", "seed": 10**30}, "seed"),
    "number_as_string": ({"prompt": "fox", "strength": "0.5"}, "strength"),
    "number_above_maximum": ({"prompt": "fox", "strength": 1.5}, "strength"),
    "boolean_as_string": ({"prompt": "fox", "hires": "yes"}, "hires"),
    "boolean_as_number": ({"prompt": "fox", "hires": 1}, "hires"),
    "choice_unknown": ({"prompt": "fox", "style": "watercolor"}, "style"),
    "choice_as_number": ({"prompt": "fox", "style": 1}, "style"),
    "short_text_too_long": ({"prompt": "fox", "negative": "x" * 51}, "negative"),
    "image_url_javascript": ({"prompt": "fox", "image": "javascript:alert(1)"}, "image"),
    "image_url_not_a_url": ({"prompt": "fox", "image": "a picture of a fox"}, "image"),
}


@pytest.mark.parametrize("case", INVALID)
def test_it_refuses_invalid_inputs_with_a_400_and_charges_nothing(
    case: str, sim, alice, alice_client, workflow
) -> None:
    inputs, field = INVALID[case]

    response = _post(alice_client, inputs)

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["detail"]
    assert field in body["errors"] and all(isinstance(m, str) and m for m in body["errors"][field])
    _assert_nothing_happened(alice, sim)


@pytest.mark.parametrize(
    "escaped",
    ["a\\u0000b", "a\\ud800b", "\\udfff"],
    ids=["nul", "lone_high_surrogate", "lone_low_surrogate"],
)
def test_it_refuses_text_that_cannot_be_stored_or_sent(
    escaped: str, sim, alice, alice_client, workflow
) -> None:
    body = '{"workflow": "text-to-image", "inputs": {"prompt": "' + escaped + '"}}'

    response = post_json(alice_client, f"{API}/generations", body)

    assert response.status_code == 400, response.content
    assert "prompt" in response.json()["errors"]
    _assert_nothing_happened(alice, sim)


def test_it_accepts_text_in_any_language_with_line_breaks(
    sim, alice, alice_client, workflow
) -> None:
    prompt = "un zorro rojo 🦊 en la nieve\nキツネ\tŻółw"

    response = _post(alice_client, {"prompt": prompt})

    assert response.status_code == 201, response.content
    assert _queued_inputs(sim)["prompt"] == prompt


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_it_refuses_non_finite_numbers(literal: str, sim, alice, alice_client, workflow) -> None:
    body = '{"workflow": "text-to-image", "inputs": {"prompt": "fox", "strength": ' + literal + "}}"

    response = post_json(alice_client, f"{API}/generations", body)

    assert response.status_code == 400, response.content
    _assert_nothing_happened(alice, sim)


MALFORMED_BODIES = {
    "not_json": "workflow=text-to-image",
    "truncated_json": '{"workflow": "text-to-image", "inputs": {',
    "json_array": "[]",
    "json_string": '"text-to-image"',
    "no_workflow": '{"inputs": {"prompt": "fox"}}',
    "workflow_as_number": '{"workflow": 5, "inputs": {"prompt": "fox"}}',
    "workflow_as_object": '{"workflow": {"slug": "text-to-image"}, "inputs": {"prompt": "fox"}}',
    "inputs_as_string": '{"workflow": "text-to-image", "inputs": "prompt=fox"}',
    "inputs_as_list": '{"workflow": "text-to-image", "inputs": ["fox"]}',
    "inputs_null": '{"workflow": "text-to-image", "inputs": null}',
    "deeply_nested": '{"workflow": "text-to-image", "inputs": {"prompt": ' + "[" * 50_000 + "}}",
}


@pytest.mark.parametrize("case", MALFORMED_BODIES)
def test_it_answers_a_malformed_body_with_a_400(
    case: str, sim, alice, alice_client, workflow
) -> None:
    response = post_json(alice_client, f"{API}/generations", MALFORMED_BODIES[case])

    assert response.status_code == 400, response.content
    assert response.json()["error"]
    _assert_nothing_happened(alice, sim)


def test_it_ignores_client_sent_cost_status_and_owner(
    sim, alice, bob, alice_client, workflow
) -> None:
    response = _post(
        alice_client,
        {"prompt": "a red fox"},
        cost=0,
        status="succeeded",
        user=bob.pk,
        run_id="5e1a7c2b-0d3f-4c11-9a8e-0000000000ee",
        outputs=[{"url": "https://evil.example/x.png", "type": "image"}],
        progress=1,
    )

    assert response.status_code == 201, response.content
    shown = response.json()
    assert (shown["cost"], shown["status"], shown["outputs"], shown["progress"]) == (
        2,
        "queued",
        [],
        0.0,
    )
    generation = Generation.objects.get(pk=shown["id"])
    assert generation.user == alice and generation.cost == 2
    assert generation.run_id != "5e1a7c2b-0d3f-4c11-9a8e-0000000000ee"
    assert balance(alice) == 3 and balance(bob) == 5


def test_it_drops_unknown_and_injected_input_keys_before_queueing(
    sim, alice, alice_client, workflow
) -> None:
    response = _post(
        alice_client,
        {
            "prompt": "a red fox",
            "cost": 0,
            "status": "succeeded",
            "webhook": "https://evil.example/",
            "evil": "x",
        },
    )

    assert response.status_code == 201, response.content
    expected = {"prompt": "a red fox", "seed": 42, "hires": False, "style": "photo"}
    assert response.json()["inputs"] == expected
    assert Generation.objects.get().inputs == expected
    assert _queued_inputs(sim) == expected  # upstream never saw the injected keys
    assert balance(alice) == 3


def test_it_accepts_every_valid_type_and_sends_typed_json_upstream(
    sim, alice, alice_client, workflow
) -> None:
    inputs = {
        "prompt": "x" * 2000,
        "seed": 1000,
        "strength": 0.25,
        "hires": True,
        "style": "sketch",
        "negative": "blurry",
        "image": "https://images.example/fox.png",
    }

    response = _post(alice_client, inputs)

    assert response.status_code == 201, response.content
    assert _queued_inputs(sim) == inputs
    assert balance(alice) == 3


def test_it_takes_an_integer_valued_float_for_a_number(sim, alice, alice_client, workflow) -> None:
    response = _post(alice_client, {"prompt": "fox", "strength": 1})

    assert response.status_code == 201, response.content
    assert _queued_inputs(sim)["strength"] == 1


@pytest.mark.parametrize(
    "slug", ["no-such-workflow", "hidden", "", "../admin", "\ud800", "x" * 10_000]
)
def test_it_answers_404_for_an_unknown_or_inactive_workflow(
    slug: str, sim, alice, alice_client, workflow
) -> None:
    Workflow.objects.create(
        name="Hidden", slug="hidden", deployment_id=workflow.deployment_id, cost=1, is_active=False
    )

    response = post_json(
        alice_client, f"{API}/generations", {"workflow": slug, "inputs": {"prompt": "fox"}}
    )

    assert response.status_code == 404, response.content
    assert response.json()["error"] == "not_found"
    _assert_nothing_happened(alice, sim)


def test_it_validates_a_form_post_from_strings(workflow) -> None:
    # The dashboard posts a form: every value is a string and an unticked box is absent.
    data = QueryDict(mutable=True)
    data.update(
        {"prompt": "  a red fox  ", "seed": "7", "strength": "0.5", "style": "sketch", "evil": "x"}
    )

    cleaned = inputs_validate(workflow=workflow, data=data)

    assert cleaned == {
        "prompt": "a red fox",
        "seed": 7,
        "strength": 0.5,
        "hires": False,
        "style": "sketch",
    }


def test_it_reports_every_invalid_field_of_a_form_post(workflow) -> None:
    data = QueryDict(mutable=True)
    data.update({"seed": "seven", "style": "watercolor", "negative": "x" * 51})

    with pytest.raises(InputsInvalid) as refused:
        inputs_validate(workflow=workflow, data=data)

    assert {"prompt", "seed", "style", "negative"} <= set(refused.value.errors)
