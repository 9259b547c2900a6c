"""/healthz: what load balancers and the container HEALTHCHECK ask. 200 only after a real round trip
to the database; 503 (not a 500 page, not a hang) when the database is unreachable."""

import socket
import subprocess
import sys

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.test_production_settings import ROOT, production_env


@pytest.mark.django_db
def test_it_answers_200_after_a_database_round_trip(client) -> None:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}
    assert [q["sql"] for q in queries.captured_queries] == ["SELECT 1"]
    # A probe must see the present, never a cached answer.
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_it_is_not_redirected_to_https_so_plain_http_probes_work(client, settings) -> None:
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz").status_code == 200
    assert client.get("/").status_code == 301  # everything else is


@pytest.mark.django_db
def test_it_only_answers_get(client) -> None:
    assert client.post("/healthz").status_code == 405


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_it_answers_503_when_the_database_is_unreachable() -> None:
    """A real process whose DATABASE_URL points at a port nobody listens on."""
    env = production_env(
        DATABASE_URL=f"postgres://app:secret@127.0.0.1:{_closed_port()}/comfy?connect_timeout=3",
        ALLOWED_HOSTS="localhost",
    )
    code = (
        "from django.test import Client; "
        "r = Client(headers={'host': 'localhost'}).get('/healthz', secure=True); "
        "print(r.status_code, r.content.decode())"
    )

    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    status, body = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "503"
    assert body == '{"status": "error", "database": "unreachable"}'
