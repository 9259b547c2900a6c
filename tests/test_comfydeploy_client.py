"""The ComfyDeploy client: round trips against the in-process simulator, every failure mode as a
ComfyDeployError with a readable message, and lenient parsing that never crashes on junk."""

import json
import logging
import math
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from generations import comfydeploy
from generations.comfydeploy import (
    ComfyDeployClient,
    ComfyDeployError,
    RunOutput,
    get_client,
    parse_deployment_inputs,
    parse_progress,
    parse_run_snapshot,
    parse_timestamp,
)
from generations.simulator import (
    QUEUE_PATH,
    SIMULATOR_API_KEY,
    SIMULATOR_DEPLOYMENT_ID,
    Simulator,
)
from tests.simulator_fixtures import app_simulator, simulator  # noqa: F401

RUN_ID = "8fc6e9a0-1883-4d19-9b9b-563ae34d0a3a"


def make_client(
    base_url: str, api_key: str = SIMULATOR_API_KEY, **timeouts: float
) -> ComfyDeployClient:
    return ComfyDeployClient(
        base_url=base_url,
        api_key=api_key,
        connect_timeout=timeouts.get("connect_timeout", 2.0),
        read_timeout=timeouts.get("read_timeout", 5.0),
    )


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> ComfyDeployClient:
    """A client whose HTTP exchanges are answered by ``handler`` (an HTTP-level fake)."""
    return ComfyDeployClient(
        base_url="https://api.example.test/api",
        api_key="k",
        connect_timeout=1.0,
        read_timeout=1.0,
        transport=httpx.MockTransport(handler),
    )


def queue(client: ComfyDeployClient, prompt: str = "a red fox in snow", webhook: str = "") -> str:
    return client.queue_run(
        deployment_id=SIMULATOR_DEPLOYMENT_ID,
        inputs={"prompt": prompt, "seed": 7},
        webhook_url=webhook,
    )


@pytest.fixture
def client(simulator: Simulator) -> Iterator[ComfyDeployClient]:  # noqa: F811
    with make_client(simulator.url) as c:
        yield c


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Round trips against the simulator ----------------------------------------------------------


def test_it_queues_a_run_with_bearer_auth_and_the_webhook_exactly_as_given(
    client: ComfyDeployClient,
    simulator: Simulator,  # noqa: F811
) -> None:
    webhook = "http://127.0.0.1:9/webhooks/comfydeploy/abc/tok/?x=1&y=%20"
    run_id = queue(client, webhook=webhook)

    assert uuid.UUID(run_id)
    (request,) = [r for r in simulator.requests if r.path == QUEUE_PATH]
    assert request.headers["Authorization"] == f"Bearer {SIMULATOR_API_KEY}"
    assert json.loads(request.body) == {
        "deployment_id": SIMULATOR_DEPLOYMENT_ID,
        "inputs": {"prompt": "a red fox in snow", "seed": 7},
        "webhook": webhook,
        "webhook_intermediate_status": False,
    }
    assert simulator.run(run_id).webhook == webhook


def test_it_reads_a_finished_run_with_its_image_and_timestamps(
    client: ComfyDeployClient,
    simulator: Simulator,  # noqa: F811
) -> None:
    run_id = queue(client)
    first = client.get_run(run_id)
    assert first.run_id == run_id
    assert first.status in comfydeploy.UPSTREAM_STATUSES
    assert simulator.wait_for(lambda: simulator.run(run_id).is_terminal)

    snapshot = client.get_run(run_id)

    assert snapshot.status == "success"
    assert snapshot.is_terminal
    assert snapshot.progress == 1.0
    assert snapshot.outputs == [
        RunOutput(
            url=f"{simulator.origin}/files/{run_id}/0.png", type="image", output_id="output_images"
        )
    ]
    stamps = [snapshot.created_at, snapshot.queued_at, snapshot.started_at, snapshot.ended_at]
    assert all(s is not None and s.tzinfo is not None for s in stamps)
    assert stamps == sorted(stamps)


def test_it_cancels_a_running_run(client: ComfyDeployClient, simulator: Simulator) -> None:  # noqa: F811
    run_id = queue(client, prompt="a fox [sim:stuck]")
    assert simulator.wait_for(lambda: client.get_run(run_id).status == "running")

    client.cancel_run(run_id)

    assert client.get_run(run_id).status == "cancelled"


def test_it_reads_the_input_types_of_a_deployment(client: ComfyDeployClient) -> None:
    inputs = {i.input_id: i for i in client.get_deployment_inputs(SIMULATOR_DEPLOYMENT_ID)}

    assert list(inputs) == ["prompt", "seed", "style"]
    assert inputs["prompt"].type == "string"
    assert inputs["prompt"].class_type == "ComfyUIDeployExternalText"
    assert inputs["prompt"].display_name == "Prompt"
    assert (inputs["seed"].type, inputs["seed"].default_value) == ("integer", 42)
    assert (inputs["seed"].min_value, inputs["seed"].max_value) == (0, 2147483647)
    assert inputs["style"].enum_options == ["photo", "illustration", "sketch"]


def test_it_reads_the_inputs_of_an_added_deployment(
    client: ComfyDeployClient,
    simulator: Simulator,  # noqa: F811
) -> None:
    deployment_id = str(uuid.uuid4())
    simulator.add_deployment(
        deployment_id,
        [{"type": "float", "input_id": "cfg", "min_value": 1.5, "default_value": 7.0}],
    )

    (cfg,) = client.get_deployment_inputs(deployment_id)

    assert (cfg.input_id, cfg.type, cfg.min_value, cfg.max_value) == ("cfg", "float", 1.5, None)


# --- Every failure is a ComfyDeployError with a readable message ---------------------------------


def test_it_reports_a_refused_connection() -> None:
    with (
        make_client(f"http://127.0.0.1:{closed_port()}/api") as client,
        pytest.raises(ComfyDeployError) as caught,
    ):
        queue(client)

    assert caught.value.kind == "connect"
    assert caught.value.status_code is None
    assert caught.value.message == "Could not connect to ComfyDeploy (connection refused)"


def test_it_reports_a_read_timeout_without_retrying_the_queue_post(simulator: Simulator) -> None:  # noqa: F811
    simulator.configure(queue_delay=0.5)

    with (
        make_client(simulator.url, read_timeout=0.1) as client,
        pytest.raises(ComfyDeployError) as caught,
    ):
        queue(client)

    assert caught.value.kind == "timeout"
    assert caught.value.message == "ComfyDeploy did not answer within 0.1 s"
    # Upstream went on and created the run: exactly one, because the POST was sent once.
    assert simulator.wait_for(lambda: len(simulator.runs) == 1, timeout=3)
    assert simulator.count_requests("POST", QUEUE_PATH) == 1


@pytest.mark.parametrize(
    ("switches", "message"),
    [
        ({"queue_status": 500}, "ComfyDeploy failed (HTTP 500): Internal Server Error"),
        ({"queue_status": 429}, "ComfyDeploy refused the request (HTTP 429): Too Many Requests"),
        ({"queue_malformed": "invalid_json"}, "ComfyDeploy answered with invalid JSON"),
        ({"queue_malformed": "no_run_id"}, "ComfyDeploy's answer had no run_id"),
    ],
)
def test_it_never_retries_a_failed_queue_post(
    client: ComfyDeployClient,
    simulator: Simulator,  # noqa: F811
    switches: dict,
    message: str,
) -> None:
    simulator.configure(**switches)

    with pytest.raises(ComfyDeployError) as caught:
        queue(client)

    assert caught.value.message == message
    assert simulator.count_requests("POST", QUEUE_PATH) == 1
    assert simulator.runs == {}


def test_it_shows_the_fastapi_detail_of_an_error(
    client: ComfyDeployClient,
    simulator: Simulator,  # noqa: F811
) -> None:
    with pytest.raises(ComfyDeployError) as not_found:
        client.queue_run(deployment_id=str(uuid.uuid4()), inputs={}, webhook_url="")
    simulator.configure(queue_status=403)
    with pytest.raises(ComfyDeployError) as no_credits:
        queue(client)

    assert not_found.value.kind == "http"
    assert not_found.value.status_code == 404
    assert (
        not_found.value.message
        == "ComfyDeploy refused the request (HTTP 404): Deployment not found"
    )
    assert no_credits.value.status_code == 403
    assert "Insufficient GPU credits" in no_credits.value.message


def test_it_shows_each_problem_of_a_422_validation_error(client: ComfyDeployClient) -> None:
    with pytest.raises(ComfyDeployError) as bad_id:
        client.queue_run(deployment_id="not-a-uuid", inputs={}, webhook_url="")
    with pytest.raises(ComfyDeployError) as nested:
        client.queue_run(
            deployment_id=SIMULATOR_DEPLOYMENT_ID, inputs={"style": {"a": 1}}, webhook_url=""
        )

    assert bad_id.value.status_code == 422
    assert bad_id.value.message == (
        "ComfyDeploy refused the request (HTTP 422): deployment_id: Input should be a valid UUID"
    )
    assert nested.value.message.startswith(
        "ComfyDeploy refused the request (HTTP 422): inputs.style: "
    )


def test_it_reports_a_rejected_api_key(simulator: Simulator) -> None:  # noqa: F811
    with (
        make_client(simulator.url, api_key="wrong") as client,
        pytest.raises(ComfyDeployError) as caught,
    ):
        client.get_deployment_inputs(SIMULATOR_DEPLOYMENT_ID)

    assert caught.value.status_code == 401
    assert (
        caught.value.message
        == "ComfyDeploy refused the request (HTTP 401): Invalid or expired token"
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("get_run_unknown", "ComfyDeploy refused the request (HTTP 404): Run not found"),
        ("cancel_unknown", "ComfyDeploy failed (HTTP 500): Internal Server Error"),
        ("deployment_unknown", "ComfyDeploy failed (HTTP 500): Internal Server Error"),
    ],
)
def test_it_reports_unknown_runs_and_deployments(
    client: ComfyDeployClient, call: str, message: str
) -> None:
    calls = {
        "get_run_unknown": lambda: client.get_run(str(uuid.uuid4())),
        "cancel_unknown": lambda: client.cancel_run(str(uuid.uuid4())),
        "deployment_unknown": lambda: client.get_deployment_inputs(str(uuid.uuid4())),
    }
    with pytest.raises(ComfyDeployError) as caught:
        calls[call]()

    assert caught.value.kind == "http"
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("exception", "kind", "message"),
    [
        (httpx.ConnectTimeout("slow"), "connect", "Could not connect to ComfyDeploy within 1 s"),
        (httpx.PoolTimeout("busy"), "connect", "Could not connect to ComfyDeploy within 1 s"),
        (httpx.ReadTimeout("slow"), "timeout", "ComfyDeploy did not answer within 1 s"),
        (httpx.WriteTimeout("slow"), "timeout", "ComfyDeploy did not answer within 1 s"),
        (
            httpx.ConnectError("Name or service not known"),
            "connect",
            "Could not connect to ComfyDeploy (Name or service not known)",
        ),
        (
            httpx.RemoteProtocolError("Server disconnected"),
            "connect",
            "The connection to ComfyDeploy failed (Server disconnected)",
        ),
        (
            httpx.ReadError("reset by peer"),
            "connect",
            "The connection to ComfyDeploy failed (reset by peer)",
        ),
        (
            httpx.ProxyError("proxy down"),
            "connect",
            "The connection to ComfyDeploy failed (proxy down)",
        ),
    ],
)
def test_it_turns_every_transport_error_into_a_comfydeploy_error(
    exception: Exception, kind: str, message: str
) -> None:
    def explode(request: httpx.Request) -> httpx.Response:
        raise exception

    client = mock_client(explode)
    for call in (
        lambda: queue(client),
        lambda: client.get_run(RUN_ID),
        lambda: client.cancel_run(RUN_ID),
    ):
        with pytest.raises(ComfyDeployError) as caught:
            call()
        assert (caught.value.kind, caught.value.message) == (kind, message)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            httpx.Response(502, text="<html><body>Bad gateway</body></html>"),
            "ComfyDeploy failed (HTTP 502): Bad Gateway",
        ),
        (
            httpx.Response(503, text="upstream\nconnect error"),
            "ComfyDeploy failed (HTTP 503): upstream connect error",
        ),
        (
            httpx.Response(400, json={"detail": {"reason": "odd"}}),
            'ComfyDeploy refused the request (HTTP 400): {"reason": "odd"}',
        ),
        (
            httpx.Response(418, content=b""),
            "ComfyDeploy refused the request (HTTP 418): I'm a teapot",
        ),
        (
            httpx.Response(302, headers={"Location": "https://elsewhere"}),
            "ComfyDeploy refused the request (HTTP 302): Found",
        ),
        (
            httpx.Response(400, json={"detail": "x" * 1000}),
            "ComfyDeploy refused the request (HTTP 400): " + "x" * 300,
        ),
    ],
)
def test_it_reads_non_fastapi_error_bodies(response: httpx.Response, message: str) -> None:
    client = mock_client(lambda request: response)

    with pytest.raises(ComfyDeployError) as caught:
        client.get_run(RUN_ID)

    assert caught.value.kind == "http"
    assert caught.value.message == message


@pytest.mark.parametrize(
    "body",
    [b'["run_id"]', b"null", b'{"run_id": ""}', b'{"run_id": 5}', b'{"run_id": "  "}', b'"run"'],
)
def test_it_refuses_queue_answers_without_a_usable_run_id(body: bytes) -> None:
    client = mock_client(lambda request: httpx.Response(200, content=body))

    with pytest.raises(ComfyDeployError) as caught:
        queue(client)

    assert caught.value.kind == "malformed"
    assert caught.value.message == "ComfyDeploy's answer had no run_id"


@pytest.mark.parametrize(
    "body",
    [b"{", b"\xff\xfe", b"[" * 100_000, b'{"id": "' + RUN_ID.encode() + b'"}', b"[]"],
)
def test_it_refuses_malformed_run_answers(body: bytes) -> None:
    client = mock_client(lambda request: httpx.Response(200, content=body))

    with pytest.raises(ComfyDeployError) as caught:
        client.get_run(RUN_ID)

    assert caught.value.kind == "malformed"


def test_it_refuses_a_snapshot_of_a_different_run() -> None:
    other = {"id": str(uuid.uuid4()), "status": "success"}
    client = mock_client(lambda request: httpx.Response(200, json=other))

    with pytest.raises(ComfyDeployError) as caught:
        client.get_run(RUN_ID)

    assert caught.value.message == "ComfyDeploy answered about a different run"


def test_it_refuses_inputs_that_are_not_json_without_sending_anything() -> None:
    sent: list[httpx.Request] = []
    client = mock_client(
        lambda request: sent.append(request) or httpx.Response(200, json={"run_id": RUN_ID})
    )

    for bad in ({"seed": math.nan}, {"image": object()}):
        with pytest.raises(ComfyDeployError) as caught:
            client.queue_run(deployment_id=SIMULATOR_DEPLOYMENT_ID, inputs=bad, webhook_url="")
        assert caught.value.kind == "malformed"
    assert sent == []


def test_it_quotes_run_ids_into_the_path() -> None:
    paths: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"status": "success"})

    mock_client(answer).cancel_run("../deployment/x?y")

    assert paths == ["/api/run/..%2Fdeployment%2Fx%3Fy/cancel"]


def test_it_logs_failures_with_the_run_id(
    client: ComfyDeployClient, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = str(uuid.uuid4())

    with (
        caplog.at_level(logging.WARNING, logger="generations.comfydeploy"),
        pytest.raises(ComfyDeployError),
    ):
        client.get_run(run_id)

    (record,) = [r for r in caplog.records if r.name == "generations.comfydeploy"]
    assert record.run_id == run_id
    assert (record.kind, record.status_code, record.call) == ("http", 404, "get_run")


# --- Parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0, 0.0),
        (0.5, 0.5),
        (1, 1.0),
        (50, 0.5),  # percent, as the docs say
        (100, 1.0),
        (250, 1.0),
        (-3, 0.0),
        ("0.25", 0.25),
        ("75", 0.75),
        ("abc", 0.0),
        (None, 0.0),
        (True, 0.0),
        ([0.5], 0.0),
        (math.nan, 0.0),
        (math.inf, 1.0),
        (-math.inf, 0.0),
        (10**400, 1.0),
    ],
)
def test_it_normalises_progress_to_a_fraction(raw: object, expected: float) -> None:
    assert parse_progress(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-05-01T10:20:30Z", datetime(2025, 5, 1, 10, 20, 30, tzinfo=UTC)),
        ("2025-05-01T10:20:30.1Z", datetime(2025, 5, 1, 10, 20, 30, 100000, tzinfo=UTC)),
        ("2025-05-01T10:20:30.123z", datetime(2025, 5, 1, 10, 20, 30, 123000, tzinfo=UTC)),
        ("2025-05-01T10:20:30.123456789Z", datetime(2025, 5, 1, 10, 20, 30, 123456, tzinfo=UTC)),
        ("2025-05-01T12:20:30+02:00", datetime(2025, 5, 1, 10, 20, 30, tzinfo=UTC)),
        (
            "2025-05-01T12:20:30.5+02:00",
            datetime(2025, 5, 1, 12, 20, 30, 500000, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2025-05-01 10:20:30.25+00", datetime(2025, 5, 1, 10, 20, 30, 250000, tzinfo=UTC)),
        ("2025-05-01T10:20:30", datetime(2025, 5, 1, 10, 20, 30, tzinfo=UTC)),  # naive → UTC
        ("  2025-05-01T10:20:30Z  ", datetime(2025, 5, 1, 10, 20, 30, tzinfo=UTC)),
    ],
)
def test_it_parses_timestamps_leniently(raw: str, expected: datetime) -> None:
    parsed = parse_timestamp(raw)

    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "yesterday",
        "2025-13-45T99:99:99Z",
        "Z",
        "2025-02-30T10:00:00Z",
        "10:20:30",
        1714558830,
        None,
        ["2025"],
    ],
)
def test_it_turns_unreadable_timestamps_into_none(raw: object) -> None:
    assert parse_timestamp(raw) is None


def test_it_parses_a_webhook_body_keyed_by_run_id() -> None:
    snapshot = parse_run_snapshot(
        {
            "event_type": "run.updated",
            "run_id": RUN_ID,
            "status": "running",
            "progress": 45,
            "live_status": "Executing KSampler\n",
            "outputs": None,
        }
    )

    assert (snapshot.run_id, snapshot.status, snapshot.progress) == (RUN_ID, "running", 0.45)
    assert snapshot.live_status == "Executing KSampler"
    assert snapshot.outputs == []
    assert snapshot.created_at is None


def test_it_keeps_media_outputs_and_skips_outputs_of_the_wrong_shape() -> None:
    snapshot = parse_run_snapshot(
        {
            "id": RUN_ID,
            "status": "success",
            "outputs": [
                {
                    "output_id": "output_images",
                    "data": {"images": [{"url": "https://b/1.png"}, {"filename": "no-url"}]},
                },
                {"data": {"gifs": [{"url": "https://b/2.mp4"}], "files": ["https://b/3.zip"]}},
                {
                    "output_id": 7,
                    "data": {"mesh": [{"url": "https://b/4.glb"}], "text": ["a caption"]},
                },
                {"data": {"images": "https://b/not-a-list.png"}},
                {"data": ["nope"]},
                "junk",
                None,
                {"data": {"images": [{"url": ""}, {"url": 5}, None]}},
            ],
        }
    )

    assert snapshot.outputs == [
        RunOutput("https://b/1.png", "image", "output_images"),
        RunOutput("https://b/2.mp4", "video", ""),
        RunOutput("https://b/3.zip", "file", ""),
        RunOutput("https://b/4.glb", "mesh", ""),
    ]
    assert snapshot.outputs[0].as_dict() == {
        "url": "https://b/1.png",
        "type": "image",
        "output_id": "output_images",
    }


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "success",
        {},
        {"status": "success"},
        {"id": "", "status": "success"},
        {"id": 5, "status": "success"},
        {"id": RUN_ID},
        {"id": RUN_ID, "status": None},
        {"id": RUN_ID, "status": 3},
        {"run_id": RUN_ID, "status": ""},
    ],
)
def test_it_refuses_snapshots_without_an_id_or_a_status(payload: object) -> None:
    with pytest.raises(ComfyDeployError) as caught:
        parse_run_snapshot(payload)

    assert caught.value.kind == "malformed"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)
known_keys = st.sampled_from(
    ["id", "run_id", "status", "progress", "live_status", "outputs", "created_at", "ended_at", "data", "images", "url",
     "output_id", "input_types", "input_id", "enum_options", "min_value"]
)  # fmt: skip
# Documents shaped like runs (known keys at every level) reach deep into the parser.
run_like = st.recursive(
    json_values,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(known_keys, children, max_size=6)
    ),
    max_leaves=40,
)


@hypothesis_settings(max_examples=200, deadline=None)
@given(payload=json_values | run_like)
def test_it_never_raises_anything_but_comfydeploy_error_on_junk(payload: object) -> None:
    for parse in (parse_run_snapshot, parse_deployment_inputs):
        try:
            result = parse(payload)
        except ComfyDeployError as error:
            assert error.kind == "malformed"
            continue
        if parse is parse_run_snapshot:
            assert 0.0 <= result.progress <= 1.0
            assert all(isinstance(o.url, str) and o.url for o in result.outputs)


# --- The process-wide client ---------------------------------------------------------------------


def test_it_uses_the_real_api_when_a_key_is_set(settings) -> None:
    settings.COMFY_DEPLOY_API_KEY = "real-key"
    settings.COMFY_DEPLOY_API_URL = "https://api.comfydeploy.com/api"
    settings.SIMULATOR_URL = "http://127.0.0.1:1/api"

    assert comfydeploy.effective_connection() == ("https://api.comfydeploy.com/api", "real-key")
    assert get_client() is get_client()
    assert get_client().base_url == "https://api.comfydeploy.com/api"


@pytest.mark.parametrize(
    ("simulator_url", "api_url", "expected"),
    [
        ("", "https://api.comfydeploy.com/api", "http://127.0.0.1:8199/api"),
        (
            "http://127.0.0.1:7000/api/",
            "https://api.comfydeploy.com/api",
            "http://127.0.0.1:7000/api",
        ),
        ("", "http://127.0.0.1:7001/api", "http://127.0.0.1:7001/api"),
    ],
)
def test_it_uses_the_simulator_when_no_key_is_set(
    settings, simulator_url: str, api_url: str, expected: str
) -> None:
    settings.COMFY_DEPLOY_API_KEY = ""
    settings.SIMULATOR_PORT = 8199
    settings.SIMULATOR_URL = simulator_url
    settings.COMFY_DEPLOY_API_URL = api_url

    assert comfydeploy.effective_connection() == (expected, SIMULATOR_API_KEY)
    assert comfydeploy.using_simulator()
    assert get_client().base_url == expected


def test_it_rebuilds_the_shared_client_when_settings_change(settings) -> None:
    settings.COMFY_DEPLOY_API_KEY = "one"
    first = get_client()
    settings.COMFY_DEPLOY_READ_TIMEOUT = 7
    second = get_client()
    settings.COMFY_DEPLOY_API_KEY = "two"
    third = get_client()

    assert first is not second is not third
    assert second.read_timeout == 7.0
    assert get_client() is third


def test_it_builds_one_shared_client_under_concurrent_first_use(settings) -> None:
    settings.COMFY_DEPLOY_API_KEY = f"key-{uuid.uuid4()}"
    barrier = threading.Barrier(16)
    seen: list[ComfyDeployClient] = []

    def use() -> None:
        barrier.wait()
        seen.append(get_client())

    threads = [threading.Thread(target=use) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len({id(c) for c in seen}) == 1


def test_it_talks_to_an_in_process_simulator_through_get_client(app_simulator: Simulator) -> None:  # noqa: F811
    run_id = get_client().queue_run(
        deployment_id=SIMULATOR_DEPLOYMENT_ID, inputs={"prompt": "hi"}, webhook_url=""
    )

    assert run_id in app_simulator.runs


def test_it_reports_an_api_key_that_a_header_cannot_carry() -> None:
    sent: list[httpx.Request] = []
    client = ComfyDeployClient(
        base_url="https://api.example.test/api",
        api_key="clé",
        connect_timeout=1.0,
        read_timeout=1.0,
        transport=httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200)),
    )

    with pytest.raises(ComfyDeployError) as caught:
        client.get_run(RUN_ID)

    assert (caught.value.kind, caught.value.message) == (
        "connect",
        "The ComfyDeploy API key is not valid",
    )
    assert sent == []
