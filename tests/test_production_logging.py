"""Logs in production: one JSON object per line, and every line of the generation pipeline names
its generation and its run, so one run can be followed through start, webhooks and refunds."""

import io
import json
import logging
import uuid

import pytest

from config.logging import JsonFormatter, LogContextFilter, RedactSecretsFilter
from generations.models import Generation, Status
from generations.services import generation_recheck, generation_start, webhook_url_for

pytest_plugins = ["tests.simulator_fixtures"]

# The pipeline's loggers; the simulator is the fake upstream, not part of the app.
PIPELINE = ("generations",)
# The ComfyDeploy client's own lines get the generation from config.logging.log_context, which
# generations/services.py sets around each client call.
NOT_PIPELINE = ("generations.simulator",)


@pytest.fixture(autouse=True)
def _isolated(settings, caplog) -> None:
    # The same filters as the production console handler (settings.LOGGING), so caplog sees what
    # a log line in production carries.
    caplog.handler.addFilter(LogContextFilter())
    caplog.handler.addFilter(RedactSecretsFilter())


def _pipeline_records(caplog) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith(PIPELINE) and not r.name.startswith(NOT_PIPELINE)
    ]


def _assert_every_line_names_its_run(
    records: list[logging.LogRecord], generation: Generation
) -> None:
    assert records, "the pipeline logged nothing"
    for record in records:
        assert getattr(record, "generation_id", None) == str(generation.id), record.getMessage()
        # Empty only before ComfyDeploy has given the run an id.
        assert getattr(record, "run_id", None) in ("", generation.run_id), record.getMessage()
    assert any(record.run_id == generation.run_id for record in records)


@pytest.mark.django_db(transaction=True)
def test_it_names_the_generation_and_run_on_every_pipeline_line(
    alice, workflow, app_simulator, live_server, settings, caplog
) -> None:
    settings.APP_URL = live_server.url
    caplog.set_level(logging.DEBUG)

    generation = generation_start(user=alice, workflow=workflow, inputs={"prompt": "a fox"})
    assert app_simulator.wait_for(
        lambda: app_simulator.run(generation.run_id).is_terminal, timeout=10
    )
    assert app_simulator.wait_for(
        lambda: Generation.objects.get(pk=generation.pk).status == Status.SUCCEEDED, timeout=10
    )

    _assert_every_line_names_its_run(_pipeline_records(caplog), generation)


@pytest.mark.django_db
def test_it_names_the_generation_and_run_when_a_queue_call_fails(
    alice, workflow, app_simulator, caplog
) -> None:
    app_simulator.configure(queue_status=503)
    caplog.set_level(logging.DEBUG)

    generation = generation_start(user=alice, workflow=workflow, inputs={"prompt": "a fox"})

    assert generation.status == Status.FAILED
    records = _pipeline_records(caplog)
    assert any(r.levelno == logging.WARNING for r in records)
    for record in records:
        assert getattr(record, "generation_id", None) == str(generation.id), record.getMessage()
        assert getattr(record, "run_id", None) == "", record.getMessage()  # upstream gave none


@pytest.mark.django_db
def test_it_names_the_generation_and_run_when_a_recheck_fails(
    alice, workflow, app_simulator, caplog
) -> None:
    app_simulator.configure(outcome="stuck")
    generation = generation_start(user=alice, workflow=workflow, inputs={"prompt": "a fox"})
    app_simulator.stop()  # upstream gone: the re-check fails
    caplog.clear()
    caplog.set_level(logging.DEBUG)

    generation_recheck(generation=Generation.objects.get(pk=generation.pk))

    _assert_every_line_names_its_run(_pipeline_records(caplog), generation)


def test_it_configures_the_production_handler_with_context_and_redaction(settings) -> None:
    console = settings.LOGGING["handlers"]["console"]

    assert console["filters"] == ["context", "redact"]
    assert settings.LOGGING["filters"]["context"]["()"] == "config.logging.LogContextFilter"
    assert settings.LOGGING["formatters"]["json"]["()"] == "config.logging.JsonFormatter"
    assert settings.LOG_FORMAT == "json"  # the default whenever DEBUG is off


def test_it_writes_one_valid_json_object_per_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.json_lines")
    logger.addHandler(handler)
    logger.propagate = False
    generation_id = uuid.uuid4()
    try:
        logger.warning(
            'multi\nline "quoted" message: %s',
            "<script>",
            extra={"generation_id": generation_id, "run_id": "run-1", "cost": 2},
        )
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("with a traceback")
    finally:
        logger.removeHandler(handler)

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == 'multi\nline "quoted" message: <script>'
    assert first["level"] == "warning"
    assert first["logger"] == "tests.json_lines"
    assert first["generation_id"] == str(generation_id)
    assert first["run_id"] == "run-1"
    assert first["cost"] == 2
    assert first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["exc"]


@pytest.mark.django_db
def test_it_never_logs_a_webhook_token(alice, workflow, client, caplog) -> None:
    generation = Generation.objects.create(
        user=alice, workflow=workflow, cost=2, inputs={}, run_id="r-1"
    )
    url = webhook_url_for(generation)
    token = url.rstrip("/").rsplit("/", 1)[1]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecretsFilter())
    logging.getLogger().addHandler(handler)
    try:
        # Authentic URL, wrong run: Django logs the 400 with the request path.
        response = client.post(
            url, {"run_id": "other", "status": "success"}, content_type="application/json"
        )
    finally:
        logging.getLogger().removeHandler(handler)

    assert response.status_code == 400
    output = stream.getvalue()
    assert f"/webhooks/comfydeploy/{generation.id}/<redacted>/" in output
    assert token not in output
