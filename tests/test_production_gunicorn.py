"""The production server: gunicorn started exactly as the container starts it
(``gunicorn -c config/gunicorn.py config.wsgi``, every knob from the environment), serving the app
against the test database, writing one JSON object per request to its access log."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.test_production_settings import ROOT, production_env

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
START_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_database_url() -> str:
    """The pytest database (``test_…``) as a URL another process can use."""
    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def access_log(self) -> list[dict]:
        """The parsed access-log records (JSON lines with a ``method`` field)."""
        records = []
        for line in self.log_lines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("logger") == "gunicorn.access":
                    records.append(record)
        return records


@contextlib.contextmanager
def gunicorn(**env_overrides: str) -> Iterator[Server]:
    """A real gunicorn on a free loopback port, plain HTTP (TLS is the proxy's job), against the
    test database. Stopped with SIGTERM (a graceful shutdown) when the block ends."""
    port = free_port()
    env = production_env(
        DATABASE_URL=subprocess_database_url(),
        ALLOWED_HOSTS="127.0.0.1",
        CSRF_TRUSTED_ORIGINS=f"http://127.0.0.1:{port}",
        APP_URL=f"http://127.0.0.1:{port}",
        PORT=str(port),
        # Plain HTTP on loopback: no TLS redirect, cookies that travel without TLS.
        SECURE_PROXY_SSL_HEADER="false",
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        SECURE_HSTS_SECONDS="0",
        # No collectstatic in the test run: plain static storage.
        STATIC_MANIFEST="false",
        LOG_FORMAT="json",
        GUNICORN_MAX_REQUESTS="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(env_overrides)
    with tempfile.NamedTemporaryFile("w+b", prefix="gunicorn-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [GUNICORN, "--config", str(ROOT / "config" / "gunicorn.py"), "config.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, "gunicorn exited:\n" + "\n".join(server.log_lines())
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "gunicorn did not start:\n" + "\n".join(
                server.log_lines()
            )
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(OSError):
            os.unlink(log_path)


@pytest.mark.django_db(transaction=True)
def test_it_serves_the_app_with_the_configured_workers_and_threads() -> None:
    with gunicorn(WEB_CONCURRENCY="2", GUNICORN_THREADS="3") as server:
        health = httpx.get(f"{server.url}/healthz")
        login = httpx.get(f"{server.url}/accounts/login/")
        lines = server.log_lines()

    assert health.status_code == 200 and health.json()["database"] == "ok"
    assert login.status_code == 200
    assert "Content-Security-Policy" in login.headers
    ready = [json.loads(line) for line in lines if '"listening"' in line]
    assert ready and ready[0]["workers"] == 2 and ready[0]["threads"] == 3
    assert ready[0]["worker_class"] == "gthread"


@pytest.mark.django_db(transaction=True)
def test_it_writes_the_access_log_as_json_lines_without_secrets() -> None:
    with gunicorn(WEB_CONCURRENCY="1") as server:
        httpx.get(
            f"{server.url}/healthz",
            headers={"User-Agent": 'quote " and \\ backslash', "X-Request-ID": "req-42"},
        )
        token = "hmac-token-that-must-not-be-logged"
        generation_id = "0b5a4f1e-8d4e-4b8e-9a55-7f0f1c9d2a10"
        httpx.post(f"{server.url}/webhooks/comfydeploy/{generation_id}/{token}/", content=b"{}")
        httpx.get(f"{server.url}/accounts/password/reset/key/1-secret-reset-key/")
        time.sleep(0.5)  # let the worker flush its last lines
        lines = server.log_lines()
        records = server.access_log()

    # Every line gunicorn writes (its own messages included) is one JSON object.
    for line in lines:
        if line.strip():
            assert isinstance(json.loads(line), dict), line
    health = next(r for r in records if r["request_id"] == "req-42")
    assert health["method"] == "GET"
    assert health["status"] == 200
    assert health["request_id"] == "req-42"
    assert health["user_agent"] == 'quote " and \\ backslash'
    assert isinstance(health["duration_ms"], float)
    logged = "\n".join(lines)
    assert token not in logged
    assert "secret-reset-key" not in logged
    webhook = next(r for r in records if r["path"].startswith("/webhooks/"))
    assert webhook["path"] == f"/webhooks/comfydeploy/{generation_id}/<redacted>/"
    assert webhook["status"] == 404
