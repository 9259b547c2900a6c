"""The ComfyDeploy simulator: upstream's endpoints, errors, lifecycle, webhooks and their known
misbehaviours, real PNGs, and the switches that inject failures."""

import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from generations.simulator import (
    QUEUE_PATH,
    SIMULATOR_API_KEY,
    SIMULATOR_DEPLOYMENT_ID,
    Simulator,
    prompt_colors,
)
from tests.simulator_fixtures import (  # noqa: F401
    FAST_STEP_SECONDS,
    WebhookReceiver,
    simulator,
    start_simulator,
    webhook_receiver,
)

AUTH = {"Authorization": f"Bearer {SIMULATOR_API_KEY}"}
# One client for the whole module: building an httpx.Client costs tens of milliseconds.
http = httpx.Client(timeout=5, trust_env=False)
LIFECYCLE = ["queued", "started", "running", "success"]


def api(sim: Simulator, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return http.request(method, f"{sim.url}{path}", headers=headers, **kwargs)


def queue(
    sim: Simulator, prompt: str = "a red fox in snow", webhook: str | None = None, **extra: Any
) -> str:
    body = {
        "deployment_id": SIMULATOR_DEPLOYMENT_ID,
        "inputs": {"prompt": prompt},
        "webhook": webhook,
        **extra,
    }
    response = api(sim, "POST", "/run/deployment/queue", json=body)
    assert response.status_code == 200, response.text
    return response.json()["run_id"]


def wait_terminal(sim: Simulator, run_id: str) -> None:
    assert sim.wait_for(lambda: sim.run(run_id).is_terminal), sim.run(run_id).history


def wait_deliveries(sim: Simulator, count: int, timeout: float = 5.0) -> None:
    assert sim.wait_for(lambda: len(sim.deliveries) >= count, timeout=timeout), sim.deliveries


# --- Auth and the API's answers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "Not authenticated"),
        ({"Authorization": "Bearer wrong"}, "Invalid or expired token"),
        ({"Authorization": f"Basic {SIMULATOR_API_KEY}"}, "Not authenticated"),
        ({"Authorization": "Bearer"}, "Not authenticated"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/run/deployment/queue"),
        ("GET", f"/run/{uuid.uuid4()}"),
        ("POST", f"/run/{uuid.uuid4()}/cancel"),
        ("GET", f"/deployment/{SIMULATOR_DEPLOYMENT_ID}"),
    ],
)
def test_it_answers_401_without_the_bearer_key(
    simulator: Simulator,  # noqa: F811
    headers: dict,
    detail: str,
    method: str,
    path: str,
) -> None:
    response = http.request(method, f"{simulator.url}{path}", headers=headers, json={})

    assert response.status_code == 401
    assert response.json() == {"detail": detail}
    assert simulator.runs == {}


def test_it_validates_queue_bodies_like_fastapi(simulator: Simulator) -> None:  # noqa: F811
    def post(**kwargs: Any) -> httpx.Response:
        return api(simulator, "POST", "/run/deployment/queue", **kwargs)

    bad_uuid = post(json={"deployment_id": "fox", "inputs": {}})
    missing = post(json={"inputs": {}})
    nested = post(
        json={"deployment_id": SIMULATOR_DEPLOYMENT_ID, "inputs": {"prompt": {"text": "x"}}}
    )
    null_value = post(json={"deployment_id": SIMULATOR_DEPLOYMENT_ID, "inputs": {"prompt": None}})
    not_json = post(content=b"{nope", headers={"Content-Type": "application/json"})
    unknown = post(json={"deployment_id": str(uuid.uuid4()), "inputs": {}})
    fine = post(
        json={
            "deployment_id": SIMULATOR_DEPLOYMENT_ID.upper(),
            "inputs": {
                "prompt": "x",
                "seed": 1,
                "cfg": 7.5,
                "hires": True,
                "loras": ["a", 1],
                "unknown": "ignored",
            },
        }
    )

    assert bad_uuid.status_code == 422
    (problem,) = bad_uuid.json()["detail"]
    assert problem["loc"] == ["body", "deployment_id"]
    assert problem["msg"] == "Input should be a valid UUID"
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "deployment_id"]
    assert nested.status_code == 422
    assert nested.json()["detail"][0]["loc"] == ["body", "inputs", "prompt"]
    assert null_value.status_code == 422
    assert not_json.status_code == 422
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "Deployment not found"}
    assert fine.status_code == 200
    assert list(simulator.runs) == [fine.json()["run_id"]]
    assert simulator.run(fine.json()["run_id"]).status == "not-started"


def test_it_answers_unknown_runs_and_deployments_like_upstream(simulator: Simulator) -> None:  # noqa: F811
    not_uuid = api(simulator, "GET", "/run/not-a-uuid")
    unknown_run = api(simulator, "GET", f"/run/{uuid.uuid4()}")
    unknown_cancel = api(simulator, "POST", f"/run/{uuid.uuid4()}/cancel")
    unknown_deployment = api(simulator, "GET", f"/deployment/{uuid.uuid4()}")
    wrong_method = api(simulator, "GET", "/run/deployment/queue")
    no_route = api(simulator, "GET", "/nothing/here")

    assert not_uuid.status_code == 422
    assert not_uuid.json()["detail"][0]["loc"] == ["path", "run_id"]
    assert (unknown_run.status_code, unknown_run.json()) == (404, {"detail": "Run not found"})
    # Upstream crashes (500, plain text) rather than answering 404 for these two.
    assert (unknown_cancel.status_code, unknown_cancel.text) == (500, "Internal Server Error")
    assert (unknown_deployment.status_code, unknown_deployment.text) == (
        500,
        "Internal Server Error",
    )
    assert wrong_method.status_code == 405
    assert no_route.status_code == 404


def test_it_describes_a_run_like_get_run(simulator: Simulator) -> None:  # noqa: F811
    run_id = queue(simulator)
    wait_terminal(simulator, run_id)

    body = api(simulator, "GET", f"/run/{run_id}").json()

    assert body["id"] == run_id
    assert (body["status"], body["progress"], body["live_status"]) == ("success", 1.0, None)
    assert body["outputs"][0]["output_id"] == "output_images"
    (image,) = body["outputs"][0]["data"]["images"]
    assert image["url"] == f"{simulator.origin}/files/{run_id}/0.png"
    assert image["type"] == "output"
    for key in ("created_at", "updated_at", "queued_at", "started_at", "ended_at"):
        assert body[key].endswith("Z")


# --- Lifecycle and webhooks ---------------------------------------------------------------------


def test_it_posts_a_webhook_on_every_status_change_to_the_url_as_given(
    simulator: Simulator,  # noqa: F811
    webhook_receiver: WebhookReceiver,  # noqa: F811
) -> None:
    hook = f"{webhook_receiver.url}/webhooks/comfydeploy/g1/tok/?a=1&b=two"
    run_id = queue(simulator, webhook=hook)
    wait_terminal(simulator, run_id)
    wait_deliveries(simulator, 4)

    received = webhook_receiver.requests()
    assert [r.json["status"] for r in received] == LIFECYCLE
    assert simulator.run(run_id).history == ["not-started", *LIFECYCLE]
    assert {r.method for r in received} == {"POST"}
    assert {r.path for r in received} == {"/webhooks/comfydeploy/g1/tok/?a=1&b=two"}
    for request in received:
        assert request.headers["content-type"] == "application/json"
        assert not {"authorization", "x-signature", "webhook-signature"} & set(request.headers)
        assert request.json["event_type"] == "run.updated"
        assert request.json["run_id"] == run_id
    running = received[2].json
    assert 0 < running["progress"] < 1
    assert running["live_status"].startswith("Executing ")
    final = received[-1].json
    assert final["progress"] == 1.0
    assert (
        final["outputs"][0]["data"]["images"][0]["url"]
        == f"{simulator.origin}/files/{run_id}/0.png"
    )


def test_it_adds_progress_ticks_only_when_intermediate_status_is_asked(
    simulator: Simulator,  # noqa: F811
    webhook_receiver: WebhookReceiver,  # noqa: F811
) -> None:
    run_id = queue(simulator, webhook=webhook_receiver.url, webhook_intermediate_status=True)
    wait_terminal(simulator, run_id)
    wait_deliveries(simulator, 6)

    assert webhook_receiver.statuses() == [
        "queued",
        "started",
        "running",
        "running",
        "running",
        "success",
    ]


def test_it_retries_a_failed_delivery_as_get_with_the_same_body(
    simulator: Simulator,  # noqa: F811
    webhook_receiver: WebhookReceiver,  # noqa: F811
) -> None:
    webhook_receiver.status = 500
    run_id = queue(simulator, webhook=webhook_receiver.url)
    wait_terminal(simulator, run_id)
    wait_deliveries(simulator, 12)

    received = webhook_receiver.requests()
    assert len(received) == 12  # three attempts for each of the four statuses, then it gives up
    for attempts in (received[i : i + 3] for i in range(0, 12, 3)):
        assert [r.method for r in attempts] == ["POST", "GET", "GET"]
        assert len({r.body for r in attempts}) == 1
    assert [d.attempt for d in simulator.deliveries[:3]] == [1, 2, 3]
    assert not any(d.delivered for d in simulator.deliveries)


def test_it_stops_retrying_once_a_get_is_answered(
    simulator: Simulator,  # noqa: F811
    webhook_receiver: WebhookReceiver,  # noqa: F811
) -> None:
    webhook_receiver.status = lambda request: 500 if request.method == "POST" else 200
    run_id = queue(simulator, webhook=webhook_receiver.url)
    wait_terminal(simulator, run_id)
    wait_deliveries(simulator, 8)
    time.sleep(0.1)  # room for a wrong third attempt to show up

    assert [r.method for r in webhook_receiver.requests()] == ["POST", "GET"] * 4


def test_it_records_deliveries_that_get_no_answer(simulator: Simulator) -> None:  # noqa: F811
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    run_id = queue(simulator, prompt="[sim:fail]", webhook=dead)
    wait_terminal(simulator, run_id)
    wait_deliveries(simulator, 12)

    delivery = simulator.deliveries[0]
    assert (delivery.url, delivery.response_status, delivery.delivered) == (dead, None, False)
    assert "ConnectError" in delivery.error


def test_it_sends_every_delivery_again_as_get_in_get_retry_mode(
    simulator: Simulator,  # noqa: F811
    webhook_receiver: WebhookReceiver,  # noqa: F811
) -> None:
    run_id = queue(simulator, prompt="fox [sim:getretry]", webhook=webhook_receiver.url)
    wait_terminal(simulator, run_id)
    wait_deliveries(simulator, 8)

    received = webhook_receiver.requests()
    assert [r.method for r in received] == ["POST", "GET"] * 4
    assert [r.json["status"] for r in received[::2]] == LIFECYCLE
    assert all(received[i].body == received[i + 1].body for i in range(0, 8, 2))


def test_it_delivers_each_event_two_or_three_times_in_duplicate_mode(
    simulator: Simulator,  # noqa: F811
    webhook_receiver: WebhookReceiver,  # noqa: F811
) -> None:
    run_id = queue(simulator, prompt="fox [sim:duplicate]", webhook=webhook_receiver.url)
    wait_terminal(simulator, run_id)
    assert simulator.wait_for(lambda: webhook_receiver.statuses().count("success") >= 2)
    time.sleep(0.1)

    statuses = webhook_receiver.statuses()
    assert {status: statuses.count(status) in (2, 3) for status in LIFECYCLE} == dict.fromkeys(
        LIFECYCLE, True
    )
    assert 3 in {statuses.count(status) for status in LIFECYCLE}


def test_it_delivers_the_terminal_event_first_and_a_stale_running_last_in_reorder_mode(
    simulator: Simulator,  # noqa: F811
    webhook_receiver: WebhookReceiver,  # noqa: F811
) -> None:
    run_id = queue(simulator, prompt="fox [sim:reorder]", webhook=webhook_receiver.url)
    wait_terminal(simulator, run_id)
    wait_deliveries(simulator, 5)

    assert webhook_receiver.statuses() == ["success", "queued", "started", "running", "running"]
    assert simulator.run(run_id).status == "success"


def test_it_loses_every_webhook_in_nowebhook_mode(
    simulator: Simulator,  # noqa: F811
    webhook_receiver: WebhookReceiver,  # noqa: F811
) -> None:
    run_id = queue(simulator, prompt="fox [sim:nowebhook]", webhook=webhook_receiver.url)
    wait_terminal(simulator, run_id)
    time.sleep(0.1)

    assert simulator.run(run_id).status == "success"
    assert webhook_receiver.requests() == []


@pytest.mark.parametrize(
    ("marker", "switch", "status"),
    [
        ("fail", "failed", "failed"),
        ("timeout", "timeout", "timeout"),
        ("cancel", "cancelled", "cancelled"),
    ],
)
@pytest.mark.parametrize("by", ["marker", "switch"])
def test_it_ends_runs_as_the_outcome_switch_or_marker_says(
    simulator: Simulator,  # noqa: F811
    webhook_receiver: WebhookReceiver,  # noqa: F811
    marker: str,
    switch: str,
    status: str,
    by: str,
) -> None:
    if by == "switch":
        simulator.configure(outcome=switch)
    run_id = queue(
        simulator,
        prompt=f"fox [sim:{marker}]" if by == "marker" else "fox",
        webhook=webhook_receiver.url,
    )
    wait_terminal(simulator, run_id)
    wait_deliveries(simulator, 4)

    body = api(simulator, "GET", f"/run/{run_id}").json()
    assert (body["status"], body["outputs"]) == (status, [])
    assert webhook_receiver.statuses() == ["queued", "started", "running", status]
    assert http.get(f"{simulator.origin}/files/{run_id}/0.png").status_code == 404


def test_it_keeps_a_stuck_run_running_without_webhooks_until_completed(
    simulator: Simulator,  # noqa: F811
    webhook_receiver: WebhookReceiver,  # noqa: F811
) -> None:
    simulator.configure(outcome="stuck")
    run_id = queue(simulator, webhook=webhook_receiver.url)
    wait_deliveries(simulator, 3)
    time.sleep(FAST_STEP_SECONDS * 10)

    assert simulator.run(run_id).status == "running"
    assert webhook_receiver.statuses() == ["queued", "started", "running"]

    assert simulator.complete(run_id, "timeout") is True
    wait_deliveries(simulator, 4)
    assert webhook_receiver.statuses()[-1] == "timeout"
    assert simulator.complete(run_id, "success") is False  # terminal statuses are sticky


def test_it_cancels_a_run_once_and_announces_it(
    simulator: Simulator,  # noqa: F811
    webhook_receiver: WebhookReceiver,  # noqa: F811
) -> None:
    run_id = queue(simulator, prompt="fox [sim:stuck]", webhook=webhook_receiver.url)
    assert simulator.wait_for(lambda: simulator.run(run_id).status == "running")

    first = api(simulator, "POST", f"/run/{run_id}/cancel")
    again = api(simulator, "POST", f"/run/{run_id}/cancel")
    wait_deliveries(simulator, 4)
    time.sleep(0.05)

    assert first.json() == again.json() == {"status": "success", "message": "Function cancelled"}
    assert simulator.run(run_id).status == "cancelled"
    assert webhook_receiver.statuses() == ["queued", "started", "running", "cancelled"]


def test_it_slows_down_runs_marked_slow(simulator: Simulator) -> None:  # noqa: F811
    run_id = queue(simulator, prompt="fox [sim:slow]")

    assert simulator.run(run_id).step_seconds == pytest.approx(FAST_STEP_SECONDS * 10)
    assert simulator.run(run_id).status == "not-started"


def test_it_finishes_runs_almost_at_once_in_instant_mode(webhook_receiver: WebhookReceiver) -> None:  # noqa: F811
    sim = start_simulator(instant=True, step_seconds=5)
    try:
        started = time.monotonic()
        run_id = queue(sim, webhook=webhook_receiver.url)
        wait_terminal(sim, run_id)

        assert time.monotonic() - started < 1
        assert sim.run(run_id).history == ["not-started", "success"]
        assert sim.wait_for(lambda: webhook_receiver.statuses() == ["success"])
    finally:
        sim.stop()


def test_it_keeps_answering_while_a_webhook_receiver_is_slow(
    simulator: Simulator,  # noqa: F811
    webhook_receiver: WebhookReceiver,  # noqa: F811
) -> None:
    webhook_receiver.delay = 0.5
    run_id = queue(simulator, webhook=webhook_receiver.url)

    # The lifecycle does not wait for deliveries, and the API is not blocked by them.
    wait_terminal(simulator, run_id)
    started = time.monotonic()
    assert api(simulator, "GET", f"/run/{run_id}").json()["status"] == "success"
    assert time.monotonic() - started < 0.3
    assert len(webhook_receiver.requests()) < 4


# --- Images -------------------------------------------------------------------------------------


def test_it_serves_a_real_png_drawn_from_the_prompt(simulator: Simulator) -> None:  # noqa: F811
    images = {}
    for prompt in ("a red fox in snow", "a lighthouse at dusk"):
        run_id = queue(simulator, prompt=prompt)
        wait_terminal(simulator, run_id)
        url = api(simulator, "GET", f"/run/{run_id}").json()["outputs"][0]["data"]["images"][0][
            "url"
        ]
        response = http.get(url)  # no auth, like a pre-signed URL
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        images[prompt] = Image.open(io.BytesIO(response.content))

    for prompt, image in images.items():
        top, bottom = prompt_colors(prompt)
        assert (image.format, image.size) == ("PNG", (512, 512))
        assert image.convert("RGB").getpixel((0, 0)) == top
        assert image.convert("RGB").getpixel((0, 511)) == bottom
        # The prompt is written in the middle: white text on a dark box.
        centre = image.convert("RGB").crop((56, 200, 456, 312)).getcolors(1 << 16)
        assert any(colour == (255, 255, 255) for _, colour in centre)
    first, second = images.values()
    assert first.getpixel((0, 0)) != second.getpixel((0, 0))


def test_it_serves_no_image_for_unknown_or_unfinished_runs(simulator: Simulator) -> None:  # noqa: F811
    run_id = queue(simulator, prompt="fox [sim:stuck]")

    assert http.get(f"{simulator.origin}/files/{run_id}/0.png").status_code == 404
    assert http.get(f"{simulator.origin}/files/{uuid.uuid4()}/0.png").status_code == 404
    simulator.complete(run_id)
    assert http.get(f"{simulator.origin}/files/{run_id}/0.png").status_code == 200
    assert http.get(f"{simulator.origin}/files/{run_id}/1.png").status_code == 404


# --- Switches ------------------------------------------------------------------------------------


def test_it_injects_queue_errors_and_malformed_answers(simulator: Simulator) -> None:  # noqa: F811
    body = {"deployment_id": SIMULATOR_DEPLOYMENT_ID, "inputs": {"prompt": "x"}}

    def post() -> httpx.Response:
        return api(simulator, "POST", "/run/deployment/queue", json=body)

    simulator.configure(queue_status=500)
    server_error = post()
    simulator.configure(queue_status=403)
    no_credits = post()
    simulator.configure(queue_status=None, queue_malformed="invalid_json")
    invalid = post()
    simulator.configure(queue_malformed="no_run_id")
    no_run_id = post()

    assert (server_error.status_code, server_error.json()) == (
        500,
        {"detail": "Internal Server Error"},
    )
    assert no_credits.status_code == 403
    assert "GPU credits" in no_credits.json()["detail"]
    assert invalid.status_code == 200
    with pytest.raises(ValueError):
        invalid.json()
    assert no_run_id.status_code == 200
    assert "run_id" not in no_run_id.json()
    assert simulator.runs == {}
    assert simulator.count_requests("POST", QUEUE_PATH) == 4


def test_it_is_controlled_over_http(simulator: Simulator) -> None:  # noqa: F811
    control = f"{simulator.origin}/__sim__"

    changed = http.post(f"{control}/config", json={"outcome": "failed", "queue_delay": 0.01})
    refused = http.post(f"{control}/config", json={"outcome": "exploded"})
    unknown = http.post(f"{control}/config", json={"nonsense": 1})
    deployment_id = http.post(
        f"{control}/deployments", json={"input_types": [{"type": "boolean", "input_id": "hires"}]}
    ).json()["id"]
    run_id = queue(simulator)
    wait_terminal(simulator, run_id)

    assert changed.status_code == 200
    assert changed.json()["outcome"] == "failed"
    assert refused.status_code == unknown.status_code == 400
    assert "outcome must be one of" in refused.json()["detail"]
    assert simulator.run(run_id).status == "failed"
    deployment = api(simulator, "GET", f"/deployment/{deployment_id}").json()
    assert deployment["input_types"] == [{"type": "boolean", "input_id": "hires"}]

    assert http.post(f"{control}/reset").json() == {"status": "reset"}
    assert simulator.config.outcome == "success"
    assert simulator.runs == {}
    assert api(simulator, "GET", f"/deployment/{deployment_id}").status_code == 500
    assert api(simulator, "GET", f"/deployment/{SIMULATOR_DEPLOYMENT_ID}").status_code == 200


def test_it_refuses_invalid_switches_in_code(simulator: Simulator) -> None:  # noqa: F811
    for switches in (
        {"webhooks": "sometimes"},
        {"queue_status": "500"},
        {"step_seconds": -1},
        {"colour": "red"},
    ):
        with pytest.raises(ValueError):
            simulator.configure(**switches)


# --- Running it ----------------------------------------------------------------------------------


def test_it_stops_promptly_with_idle_keep_alive_connections() -> None:
    sim = start_simulator()
    with httpx.Client(headers=AUTH) as client:
        assert client.get(f"{sim.url}/deployment/{SIMULATOR_DEPLOYMENT_ID}").status_code == 200
        started = time.monotonic()
        sim.stop()
        elapsed = time.monotonic() - started

        assert elapsed < 2
        with pytest.raises(httpx.TransportError):
            client.get(f"{sim.url}/deployment/{SIMULATOR_DEPLOYMENT_ID}")
    sim.stop()  # idempotent


def test_it_runs_as_a_management_command_until_sigterm() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DEBUG": "true", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "simulator",
            "--port",
            str(port),
            "--step-seconds",
            "0.01",
            "--api-key",
            "cmd-key",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/deployment/{SIMULATOR_DEPLOYMENT_ID}"
        deadline = time.monotonic() + 20
        response = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                response = http.get(url, headers={"Authorization": "Bearer cmd-key"})
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert response is not None and response.status_code == 200, (
            process.stdout and process.stdout.read()
        )

        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, output
    assert f"listening on http://127.0.0.1:{port}/api" in output
    assert "Simulator stopped." in output
