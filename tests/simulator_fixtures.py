"""Fixtures for an in-process ComfyDeploy simulator and a tiny webhook receiver.

Import the ones a module needs explicitly (conftest.py is not involved)::

    from tests.simulator_fixtures import app_simulator, simulator, webhook_receiver  # noqa: F401

* ``simulator``: a started :class:`Simulator` on a random loopback port with fast steps; stopped after.
* ``app_simulator``: the same, with the app pointed at it (``get_client()`` talks to it).
* ``webhook_receiver``: a :class:`WebhookReceiver` recording every request it gets.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from generations.simulator import Simulator

# Fast enough for a whole lifecycle in ~0.15 s, slow enough for a test to see each status.
FAST_STEP_SECONDS = 0.02


def start_simulator(**switches: Any) -> Simulator:
    """A started simulator with test-friendly timings; the caller stops it."""
    options: dict[str, Any] = {
        "step_seconds": FAST_STEP_SECONDS,
        "webhook_retry_delay": 0.01,
        "webhook_timeout": 2.0,
    }
    options.update(switches)
    return Simulator(**options).start()


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    sim = start_simulator()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def app_simulator(simulator: Simulator, settings: Any) -> Simulator:
    """Point the app at the in-process simulator.

    Sets both the URL and the key, so it works whichever branch of
    ``generations.comfydeploy.effective_connection`` applies; ``get_client()`` rebuilds its client
    because its cache is keyed on these values.
    """
    settings.COMFY_DEPLOY_API_URL = simulator.url
    settings.COMFY_DEPLOY_API_KEY = simulator.api_key
    settings.SIMULATOR_URL = simulator.url
    return simulator


@dataclass(frozen=True)
class Received:
    method: str
    path: str  # with the query string, exactly as requested
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class WebhookReceiver:
    """A loopback HTTP server that records requests and answers ``status`` (an int, or a callable
    taking the :class:`Received` request). ``delay`` seconds of sleep before answering simulate a
    slow app."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status: int | Callable[[Received], int] = 200
        self.delay = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Received(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                with receiver._lock:
                    receiver.received.append(request)
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.status(request) if callable(receiver.status) else receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def statuses(self, method: str | None = None) -> list[str]:
        """The ``status`` field of each JSON body received, in arrival order."""
        return [r.json["status"] for r in self.requests() if method in (None, r.method)]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.stop()
