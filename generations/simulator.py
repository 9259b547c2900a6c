"""A faithful local fake of ComfyDeploy: the embedded default backend and the test double.

It speaks the endpoints and JSON of the team's comfydeploy-api.md notes (Bearer auth, FastAPI-shaped
errors, the run lifecycle, unsigned webhooks whose retries arrive as GET), draws a real
PNG from the prompt with Pillow and serves it like a pre-signed URL. Switches inject the failures the
app must survive: see :class:`SimulatorConfig` and ``MARKERS``.

Runs in-process (``Simulator(...).start()`` in tests) or as ``manage.py simulator``. Only the standard
library, httpx (webhook deliveries) and Pillow (lazily, for images) are used, and nothing needs the
network beyond the machine. Deliberately independent of Django so tests can start it anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import logging
import re
import socket
import ssl
import textwrap
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx

logger = logging.getLogger("generations.simulator")

# The key the app uses when COMFY_DEPLOY_API_KEY is empty (see generations.comfydeploy.get_client).
SIMULATOR_API_KEY = "simulator-local-key"
SIMULATOR_DEPLOYMENT_ID = "5e1a7c2b-0d3f-4c11-9a8e-000000000001"
SIMULATOR_INPUT_TYPES: list[dict[str, Any]] = [
    {
        "type": "string",
        "class_type": "ComfyUIDeployExternalText",
        "input_id": "prompt",
        "default_value": "",
        "min_value": None,
        "max_value": None,
        "display_name": "Prompt",
        "description": "What to draw",
    },
    {
        "type": "integer",
        "class_type": "ComfyUIDeployExternalNumberInt",
        "input_id": "seed",
        "default_value": 42,
        "min_value": 0,
        "max_value": 2147483647,
        "display_name": "Seed",
        "description": "Same seed, same picture",
    },
    {
        "type": "string",
        "class_type": "ComfyUIDeployExternalEnum",
        "input_id": "style",
        "default_value": "photo",
        "min_value": None,
        "max_value": None,
        "enum_options": ["photo", "illustration", "sketch"],
        "display_name": "Style",
        "description": "The look of the picture",
    },
]

TERMINAL_STATUSES = frozenset({"success", "failed", "timeout", "cancelled"})
OUTCOMES = ("success", "failed", "timeout", "cancelled", "stuck")
WEBHOOK_MODES = ("normal", "none", "duplicate", "reorder", "get_retry")
MALFORMED_ANSWERS = ("invalid_json", "no_run_id")

# Per-run switches: put e.g. "[sim:fail]" anywhere in a string input (the prompt).
MARKERS: dict[str, tuple[str, Any]] = {
    "fail": ("outcome", "failed"),
    "timeout": ("outcome", "timeout"),
    "cancel": ("outcome", "cancelled"),
    "stuck": ("outcome", "stuck"),
    "nowebhook": ("webhooks", "none"),
    "duplicate": ("webhooks", "duplicate"),
    "reorder": ("webhooks", "reorder"),
    "getretry": ("webhooks", "get_retry"),
    "slow": ("slow", True),
}
_MARKER_RE = re.compile(r"\[sim:([a-z_]+)\]", re.IGNORECASE)

# Progress ticks of the "running" phase: (fraction, live_status).
RUNNING_TICKS = (
    (0.1, "Executing CheckpointLoaderSimple"),
    (0.45, "Executing KSampler"),
    (0.85, "Executing VAEDecode"),
)
WEBHOOK_ATTEMPTS = 3
# --instant still leaves the app a moment to store the run id before the terminal webhook lands.
INSTANT_DELAY = 0.05
MAX_REQUEST_BODY = 10 * 1024 * 1024
# Request and delivery logs are for inspection; bounded so a long benchmark cannot exhaust memory.
LOG_LIMIT = 10_000
QUEUE_PATH = "/api/run/deployment/queue"
INSUFFICIENT_CREDITS = (
    "Insufficient GPU credits. Please add more GPU credits to your account to continue."
)


@dataclass
class SimulatorConfig:
    """Global switches; change them with ``Simulator.configure`` or ``POST /__sim__/config``."""

    queue_status: int | None = None  # answer queue POSTs with this status (500, 403, 429, …)
    queue_delay: float = 0.0  # seconds before a queue POST answers (the run is created anyway)
    queue_malformed: str | None = None  # "invalid_json" | "no_run_id": a broken 200, no run created
    outcome: str = "success"  # how runs end: one of OUTCOMES ("stuck" never ends)
    webhooks: str = "normal"  # delivery behaviour: one of WEBHOOK_MODES
    step_seconds: float = 0.3  # time between lifecycle steps
    instant: bool = False  # straight to the outcome after INSTANT_DELAY (benchmarks)
    webhook_timeout: float = 20.0  # per delivery attempt, like upstream
    webhook_retry_delay: float = 0.5  # pause between delivery attempts
    slow_factor: float = 10.0  # how much slower "[sim:slow]" runs step


def _validated(name: str, value: Any) -> Any:
    """A switch value checked and coerced, or ValueError with a message fit for a 400."""

    def number(minimum: float, *, exclusive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number")
        if value < minimum or (exclusive and value == minimum):
            raise ValueError(f"{name} must be {'above' if exclusive else 'at least'} {minimum}")
        return float(value)

    match name:
        case "queue_status":
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
                raise ValueError("queue_status must be null or an HTTP status code")
            return value
        case "queue_malformed":
            if value in (None, False):
                return None
            if value is True:
                return "invalid_json"
            if value not in MALFORMED_ANSWERS:
                raise ValueError(f"queue_malformed must be one of {MALFORMED_ANSWERS} or null")
            return value
        case "outcome":
            if value not in OUTCOMES:
                raise ValueError(f"outcome must be one of {OUTCOMES}")
            return value
        case "webhooks":
            if value not in WEBHOOK_MODES:
                raise ValueError(f"webhooks must be one of {WEBHOOK_MODES}")
            return value
        case "instant":
            if not isinstance(value, bool):
                raise ValueError("instant must be a boolean")
            return value
        case "queue_delay" | "step_seconds" | "webhook_retry_delay":
            return number(0)
        case "webhook_timeout":
            return number(0, exclusive=True)
        case "slow_factor":
            return number(1)
    raise ValueError(f"unknown switch {name!r}")


@dataclass
class SimRun:
    """One run's state, as the simulator's GET would report it."""

    id: str
    deployment_id: str
    inputs: dict[str, Any]
    webhook: str | None
    webhook_intermediate_status: bool
    outcome: str
    webhooks: str
    step_seconds: float
    instant: bool
    status: str = "not-started"
    progress: float = 0.0
    live_status: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    image_count: int = 0  # set on success; the PNGs are drawn on request
    history: list[str] = field(default_factory=lambda: ["not-started"])
    # Internals: lifecycle stop signal, ordered webhook outbox, payloads held back by "reorder".
    halt: threading.Event = field(default_factory=threading.Event, repr=False)
    discarded: bool = field(default=False, repr=False)
    outbox: deque[dict[str, Any]] = field(default_factory=deque, repr=False)
    sending: bool = field(default=False, repr=False)
    held: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def prompt(self) -> str:
        for key in ("prompt", "positive_prompt", "text"):
            if isinstance(self.inputs.get(key), str):
                return self.inputs[key]
        return next((v for v in self.inputs.values() if isinstance(v, str)), "")

    @property
    def batch_size(self) -> int:
        value = self.inputs.get("batch_size")
        return (
            min(4, max(1, value)) if isinstance(value, int) and not isinstance(value, bool) else 1
        )

    def outputs(self, origin: str) -> list[dict[str, Any]]:
        if self.status != "success" or not self.image_count:
            return []
        images = [
            {
                "url": f"{origin}/files/{self.id}/{n}.png",
                "filename": f"ComfyUI_{n + 1:05d}_.png",
                "subfolder": "",
                "type": "output",
            }
            for n in range(self.image_count)
        ]
        return [
            {
                "output_id": "output_images",
                "node_meta": {"node_class": "ComfyDeployStdOutputImage"},
                "data": {"images": images},
                "created_at": _iso(self.ended_at),
            }
        ]


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery attempt and how the receiver answered."""

    run_id: str
    method: str
    url: str
    body: dict[str, Any]
    attempt: int
    response_status: int | None  # None: no answer (refused, timed out)
    error: str
    at: float

    @property
    def delivered(self) -> bool:
        return self.response_status is not None and self.response_status < 400


@dataclass(frozen=True)
class RequestRecord:
    """One request the simulator received (for counting, e.g. that a queue POST is never retried)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    return _Response(status, json.dumps(payload).encode(), headers=headers)


def _detail(status: int, detail: str) -> _Response:
    return _json(status, {"detail": detail})


def _validation_error(loc: list[Any], msg: str, kind: str, value: Any = None) -> _Response:
    return _json(422, {"detail": [{"type": kind, "loc": loc, "msg": msg, "input": value}]})


def _injected_detail(status: int) -> str:
    """The ``detail`` upstream would give with a status injected by the ``queue_status`` switch."""
    if status == 403:
        return INSUFFICIENT_CREDITS
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# Starlette answers an unhandled exception with this plain-text body, which upstream does for an
# unknown run on cancel and an unknown deployment.
_CRASH = _Response(500, b"Internal Server Error", content_type="text/plain; charset=utf-8")
_NOT_FOUND = _detail(404, "Not Found")


def _iso(moment: datetime | None, timespec: str = "microseconds") -> str | None:
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z") if moment else None


def _canonical_uuid(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _markers(inputs: dict[str, Any]) -> set[str]:
    """The ``[sim:…]`` markers found in string inputs (and strings inside array inputs)."""
    found: set[str] = set()
    for value in inputs.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                found.update(m.lower() for m in _MARKER_RE.findall(item))
    return found & MARKERS.keys()


# --- Images -------------------------------------------------------------------------------------


def prompt_colors(prompt: str, index: int = 0) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The gradient's (top, bottom) colours for a prompt: the same prompt always looks the same."""
    digest = hashlib.sha256(f"{index}:{prompt}".encode()).digest()
    return (digest[0], digest[1], digest[2]), (digest[3], digest[4], digest[5])


@lru_cache(maxsize=32)
def render_image(prompt: str, index: int = 0, size: int = 512) -> bytes:
    """A PNG: a vertical gradient from ``prompt_colors`` with the prompt written in the middle.

    Drawn on request (and cached a little) instead of stored per run, so thousands of benchmark runs
    cost no memory. The corners are pure gradient: row 0 is the top colour, the last row the bottom.
    """
    from PIL import Image, ImageDraw, ImageFont  # lazy: the app imports this module for constants

    top, bottom = prompt_colors(prompt, index)
    image = Image.new("RGB", (size, size), top)
    draw = ImageDraw.Draw(image)
    for y in range(size):
        t = y / max(1, size - 1)
        color = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(0, y), (size - 1, y)], fill=color)
    try:
        font: Any = ImageFont.load_default(size=max(12, size // 18))
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        font = ImageFont.load_default()
    lines = textwrap.wrap(prompt.strip() or "(empty prompt)", width=24)[:8]
    text = "\n".join(lines)
    left, upper, right, lower = draw.multiline_textbbox(
        (0, 0), text, font=font, spacing=6, align="center"
    )
    x = (size - (right - left)) / 2
    y = (size - (lower - upper)) / 2
    pad = max(4, size // 32)
    draw.rounded_rectangle(
        [x - pad, y - pad, x + (right - left) + pad, y + (lower - upper) + pad],
        radius=pad,
        fill=(0, 0, 0),
    )
    draw.multiline_text(
        (x - left, y - upper), text, font=font, fill=(255, 255, 255), spacing=6, align="center"
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """CA-verifying context for https webhooks, built once: it costs ~50 ms and tests start many
    simulators."""
    return httpx.create_ssl_context()


# --- HTTP server --------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck connection never keeps the process alive
    block_on_close = False
    simulator: Simulator


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind its load balancer
    server_version = "uvicorn"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are dropped after this
    # Headers and body leave in two writes: without this, Nagle + delayed ACK add ~40 ms per call.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.simulator._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.simulator._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if (
            "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
            or not 0 <= length <= MAX_REQUEST_BODY
        ):
            # We cannot find the end of such a body: answer and drop the connection.
            self.close_connection = True
            self._send(
                _detail(413 if length > MAX_REQUEST_BODY else 400, "Unsupported request body")
            )
            return
        try:
            body = self.rfile.read(length) if length else b""
            response = self.server.simulator._handle(
                self.command, self.path, dict(self.headers.items()), body
            )
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception:
            logger.exception("Simulator crashed on %s %s", self.command, self.path)
            response = _CRASH
        self._send(response)

    def _send(self, response: _Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(response.body)
        except (ConnectionError, TimeoutError, OSError):
            # The client gave up (e.g. its read timeout during queue_delay): nothing to tell it.
            self.close_connection = True


# --- The simulator ------------------------------------------------------------------------------


class Simulator:
    """A ComfyDeploy look-alike on ``host:port`` (0 picks a free port).

    Use ``start()`` / ``stop()`` or ``with Simulator() as sim:``; a stopped simulator cannot be
    restarted. Extra keyword arguments are switches (see :class:`SimulatorConfig`), e.g.
    ``Simulator(step_seconds=0.02, webhook_retry_delay=0.01, instant=True)``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = SIMULATOR_API_KEY,
        step_seconds: float = 0.3,
        *,
        public_url: str | None = None,
        **switches: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self._public_url = public_url.rstrip("/") if public_url else None
        # Constructor switches are what reset() returns to.
        switches["step_seconds"] = step_seconds
        self._defaults = SimulatorConfig(
            **{name: _validated(name, value) for name, value in switches.items()}
        )
        self.config = replace(self._defaults)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._runs: dict[str, SimRun] = {}
        self._deployments: dict[str, dict[str, Any]] = {}
        self._deliveries: deque[Delivery] = deque(maxlen=LOG_LIMIT)
        self._requests: deque[RequestRecord] = deque(maxlen=LOG_LIMIT)
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Deliveries go to local receivers: never through an environment proxy.
        self._http = httpx.Client(trust_env=False, follow_redirects=False, verify=_tls_context())
        self._add_builtin_deployment()

    # Lifecycle of the server itself.

    def start(self) -> Simulator:
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("a Simulator can be started once")
        server_class = _Server6 if ":" in self.host else _Server
        self._server = server_class((self.host, self.port), _Handler)
        self._server.simulator = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() may wait for the loop
            name=f"comfydeploy-simulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("ComfyDeploy simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._lock:
            for run in self._runs.values():
                run.halt.set()
            connections = list(self._connections)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        # Wake handler threads parked on idle keep-alive connections so they exit now.
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._http.close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """``http://host:port`` as clients should reach it (used for the image URLs)."""
        if self._public_url:
            return self._public_url
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)  # noqa: S104
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The API base URL, for ``COMFY_DEPLOY_API_URL``/``SIMULATOR_URL``."""
        return f"{self.origin}/api"

    # Switches and state, for tests.

    def configure(self, **switches: Any) -> SimulatorConfig:
        """Change global switches (names of :class:`SimulatorConfig`); ValueError on a bad one."""
        checked = {name: _validated(name, value) for name, value in switches.items()}
        with self._lock:
            self.config = replace(self.config, **checked)
            return replace(self.config)

    def reset(self) -> None:
        """Back to the constructor's switches, no runs, no logs, only the built-in deployment."""
        with self._lock:
            self.config = replace(self._defaults)
            for run in self._runs.values():
                run.halt.set()
                run.discarded = True
            self._runs.clear()
            self._deliveries.clear()
            self._requests.clear()
            self._deployments.clear()
            self._add_builtin_deployment()

    @property
    def runs(self) -> dict[str, SimRun]:
        with self._lock:
            return dict(self._runs)

    def run(self, run_id: str) -> SimRun:
        with self._lock:
            return self._runs[run_id]

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def count_requests(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.path == path)

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01
    ) -> bool:
        """Poll ``predicate`` until it is truthy (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def add_deployment(
        self,
        deployment_id: str,
        input_types: list[dict[str, Any]],
        name: str = "Simulated deployment",
    ) -> str:
        canonical = _canonical_uuid(deployment_id)
        if canonical is None:
            raise ValueError("deployment_id must be a UUID")
        if not isinstance(input_types, list) or not all(isinstance(i, dict) for i in input_types):
            raise ValueError("input_types must be a list of objects")
        now = datetime.now(UTC)
        with self._lock:
            self._deployments[canonical] = {
                "id": canonical,
                "name": name,
                "environment": "production",
                "workflow_id": str(uuid.uuid5(uuid.NAMESPACE_URL, canonical)),
                "input_types": json.loads(json.dumps(input_types)),  # a private deep copy
                "output_types": [
                    {"class_type": "ComfyDeployStdOutputImage", "output_id": "output_images"}
                ],
                "created_at": _iso(now),
                "updated_at": _iso(now),
            }
        return canonical

    def complete(self, run_id: str, status: str = "success") -> bool:
        """End a run now with a terminal ``status`` (e.g. to unstick one); False if already over."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {sorted(TERMINAL_STATUSES)}")
        run = self.run(run_id)
        run.halt.set()
        return self._finish(run, status)

    # Request handling (called from the server's threads).

    def _add_builtin_deployment(self) -> None:
        self.add_deployment(
            SIMULATOR_DEPLOYMENT_ID, SIMULATOR_INPUT_TYPES, name="Simulated text-to-image"
        )

    def _track_connection(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Response:
        path = urlsplit(target).path
        with self._lock:
            self._requests.append(RequestRecord(method, path, headers, body, time.time()))
        if path.startswith("/files/"):
            return self._serve_file(method, path)
        if path.startswith("/__sim__/"):
            return self._admin(method, path, body)
        if path == "/api" or path.startswith("/api/"):
            denied = self._check_auth(headers)
            return denied or self._api(method, path, body)
        return _NOT_FOUND

    def _check_auth(self, headers: dict[str, str]) -> _Response | None:
        challenge = (("WWW-Authenticate", "Bearer"),)
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _json(401, {"detail": "Not authenticated"}, challenge)
        if not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            return _json(401, {"detail": "Invalid or expired token"}, challenge)
        return None

    def _api(self, method: str, path: str, body: bytes) -> _Response:
        routes: list[tuple[str, str, Callable[..., _Response]]] = [
            ("POST", rf"^{QUEUE_PATH}$", self._queue),
            ("POST", r"^/api/run/([^/]+)/cancel$", self._cancel),
            ("GET", r"^/api/run/([^/]+)$", self._get_run),
            ("GET", r"^/api/deployment/([^/]+)$", self._get_deployment),
        ]
        path_known = False
        for route_method, pattern, view in routes:
            match = re.match(pattern, path)
            if match:
                path_known = True
                if method == route_method:
                    return view(body, *match.groups())
        return _detail(405, "Method Not Allowed") if path_known else _NOT_FOUND

    def _queue(self, body: bytes) -> _Response:
        config = replace(self.config)
        if config.queue_delay and self._stopping.wait(config.queue_delay):
            return _CRASH
        if config.queue_status is not None:
            return _detail(config.queue_status, _injected_detail(config.queue_status))
        if config.queue_malformed == "invalid_json":
            return _Response(200, b'{"run_id": "')
        if config.queue_malformed == "no_run_id":
            return _json(200, {"status": "queued"})

        try:
            data = json.loads(body) if body else None
        except (ValueError, RecursionError):
            return _validation_error(["body", 0], "JSON decode error", "json_invalid")
        if data is None:
            return _validation_error(["body"], "Field required", "missing")
        if not isinstance(data, dict):
            return _validation_error(
                ["body"],
                "Input should be a valid dictionary or object to extract fields from",
                "model_attributes_type",
                data,
            )
        if "deployment_id" not in data:
            return _validation_error(["body", "deployment_id"], "Field required", "missing")
        deployment_id = _canonical_uuid(data["deployment_id"])
        if deployment_id is None:
            return _validation_error(
                ["body", "deployment_id"],
                "Input should be a valid UUID",
                "uuid_parsing",
                data["deployment_id"],
            )
        inputs = data.get("inputs") or {}
        if not isinstance(inputs, dict):
            return _validation_error(
                ["body", "inputs"], "Input should be a valid dictionary", "dict_type", inputs
            )
        for key, value in inputs.items():
            if not isinstance(value, str | int | float | bool | list):
                return _validation_error(
                    ["body", "inputs", key],
                    "Input should be a string, number, boolean or array",
                    "union_type",
                    value,
                )
        webhook = data.get("webhook")
        if webhook is not None and not isinstance(webhook, str):
            return _validation_error(
                ["body", "webhook"], "Input should be a valid string", "string_type", webhook
            )
        intermediate = data.get("webhook_intermediate_status", False)
        if intermediate is not None and not isinstance(intermediate, bool):
            return _validation_error(
                ["body", "webhook_intermediate_status"],
                "Input should be a valid boolean",
                "bool_type",
                intermediate,
            )
        with self._lock:
            known = deployment_id in self._deployments
        if not known:
            return _detail(404, "Deployment not found")
        run = self._create_run(deployment_id, inputs, webhook or None, bool(intermediate), config)
        return _json(200, {"run_id": run.id})

    def _create_run(
        self,
        deployment_id: str,
        inputs: dict[str, Any],
        webhook: str | None,
        intermediate: bool,
        config: SimulatorConfig,
    ) -> SimRun:
        switches = dict(MARKERS[m] for m in sorted(_markers(inputs)))
        run = SimRun(
            id=str(uuid.uuid4()),
            deployment_id=deployment_id,
            inputs=inputs,
            webhook=webhook,
            webhook_intermediate_status=intermediate,
            outcome=switches.get("outcome", config.outcome),
            webhooks=switches.get("webhooks", config.webhooks),
            step_seconds=config.step_seconds * (config.slow_factor if switches.get("slow") else 1),
            instant=config.instant,
        )
        with self._lock:
            self._runs[run.id] = run
        threading.Thread(
            target=self._drive, args=(run,), name=f"sim-run:{run.id[:8]}", daemon=True
        ).start()
        logger.info(
            "Simulator queued run %s (outcome %s, webhooks %s)", run.id, run.outcome, run.webhooks
        )
        return run

    def _get_run(self, body: bytes, raw_id: str) -> _Response:
        run_id = _canonical_uuid(raw_id)
        if run_id is None:
            return _validation_error(
                ["path", "run_id"], "Input should be a valid UUID", "uuid_parsing", raw_id
            )
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return _detail(404, "Run not found")
            return _json(200, self._run_body(run))

    def _cancel(self, body: bytes, raw_id: str) -> _Response:
        run_id = _canonical_uuid(raw_id)
        if run_id is None:
            return _validation_error(
                ["path", "run_id"], "Input should be a valid UUID", "uuid_parsing", raw_id
            )
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            return _CRASH  # upstream answers 500, not 404, for an unknown run
        run.halt.set()
        self._finish(run, "cancelled")
        return _json(200, {"status": "success", "message": "Function cancelled"})

    def _get_deployment(self, body: bytes, raw_id: str) -> _Response:
        with self._lock:
            deployment = self._deployments.get(_canonical_uuid(raw_id) or "")
            if deployment is None:
                return _CRASH  # upstream answers 500, not 404, for an unknown deployment
            return _json(200, deployment)

    def _serve_file(self, method: str, path: str) -> _Response:
        # No auth, like a pre-signed bucket URL.
        match = re.fullmatch(r"/files/([0-9a-f-]{36})/(\d{1,2})\.png", path)
        if method != "GET" or not match:
            return _NOT_FOUND
        with self._lock:
            run = self._runs.get(match.group(1))
            index = int(match.group(2))
            if run is None or run.status != "success" or index >= run.image_count:
                return _NOT_FOUND
            prompt = run.prompt
        return _Response(
            200,
            render_image(prompt, index),
            content_type="image/png",
            headers=(("Cache-Control", "max-age=3600"),),
        )

    def _admin(self, method: str, path: str, body: bytes) -> _Response:
        """Control endpoints (no auth: the simulator is a local development tool)."""
        try:
            data = json.loads(body) if body else {}
        except (ValueError, RecursionError):
            return _detail(400, "Body must be JSON")
        if method == "GET" and path == "/__sim__/config":
            return _json(200, asdict(self.config))
        if method == "GET" and path == "/__sim__/state":
            with self._lock:
                runs = [
                    {
                        "id": r.id,
                        "status": r.status,
                        "history": list(r.history),
                        "webhook": r.webhook,
                    }
                    for r in self._runs.values()
                ]
            return _json(
                200,
                {"config": asdict(self.config), "runs": runs, "deliveries": len(self.deliveries)},
            )
        if method != "POST":
            return (
                _detail(405, "Method Not Allowed")
                if path in ("/__sim__/config", "/__sim__/state")
                else _NOT_FOUND
            )
        if not isinstance(data, dict):
            return _detail(400, "Body must be a JSON object")
        try:
            if path == "/__sim__/config":
                return _json(200, asdict(self.configure(**data)))
            if path == "/__sim__/reset":
                self.reset()
                return _json(200, {"status": "reset"})
            if path == "/__sim__/deployments":
                deployment_id = self.add_deployment(
                    data.get("id") or str(uuid.uuid4()),
                    data.get("input_types", []),
                    name=str(data.get("name") or "Simulated deployment"),
                )
                return _json(201, {"id": deployment_id})
            match = re.fullmatch(r"/__sim__/runs/([^/]+)/complete", path)
            if match:
                return _json(
                    200, {"changed": self.complete(match.group(1), data.get("status", "success"))}
                )
        except KeyError:
            return _detail(404, "Run not found")
        except (TypeError, ValueError) as exc:
            return _detail(400, str(exc))
        return _NOT_FOUND

    def _run_body(self, run: SimRun) -> dict[str, Any]:
        return {
            "id": run.id,
            "status": run.status,
            "progress": run.progress,
            "live_status": run.live_status,
            "outputs": run.outputs(self.origin),
            "deployment_id": run.deployment_id,
            "workflow_inputs": run.inputs,
            "origin": "api",
            "gpu": "A10G",
            "queue_position": None,
            # Upstream precision varies between fields: so does ours, to keep parsers lenient.
            # (Truncation only moves a moment earlier, so created ≤ queued ≤ started ≤ ended holds.)
            "created_at": _iso(run.created_at, "seconds"),
            "updated_at": _iso(run.updated_at),
            "queued_at": _iso(run.queued_at, "milliseconds"),
            "started_at": _iso(run.started_at),
            "ended_at": _iso(run.ended_at, "milliseconds"),
        }

    # The run lifecycle (one short-lived thread per run).

    def _drive(self, run: SimRun) -> None:
        try:
            if run.instant:
                steps = [("running", 0.5, "Executing KSampler")] if run.outcome == "stuck" else []
                delay = INSTANT_DELAY
            else:
                steps = [("queued", 0.0, None), ("started", 0.0, None)]
                steps += [("running", fraction, label) for fraction, label in RUNNING_TICKS]
                delay = run.step_seconds
            for status, progress, live_status in steps:
                if run.halt.wait(delay) or not self._transition(run, status, progress, live_status):
                    return
            if run.outcome == "stuck":
                return  # stays running; no more webhooks (upstream reports timeout after 24 h)
            if not run.halt.wait(delay):
                self._finish(run, run.outcome)
        except Exception:
            logger.exception("Simulator run %s crashed", run.id)

    def _finish(self, run: SimRun, status: str) -> bool:
        live_status = {
            "failed": "Error: simulated failure in KSampler",
            "timeout": "Run timed out",
            "cancelled": "Cancelled",
        }.get(status)
        return self._transition(
            run, status, 1.0 if status == "success" else run.progress, live_status
        )

    def _transition(
        self, run: SimRun, status: str, progress: float, live_status: str | None
    ) -> bool:
        """Move a run (terminal statuses are sticky) and announce it; False if the run is over."""
        with self._lock:
            if run.is_terminal or run.discarded:
                return False
            changed = status != run.status
            now = datetime.now(UTC)
            run.status, run.progress, run.live_status = status, progress, live_status
            run.updated_at = now
            if status == "queued":
                run.queued_at = run.queued_at or now
            elif status in ("started", "running"):
                run.started_at = run.started_at or now
            if status in TERMINAL_STATUSES:
                run.ended_at = now
                run.image_count = run.batch_size if status == "success" else 0
            if changed:
                run.history.append(status)
            payload = {
                "event_type": "run.updated",
                "status": run.status,
                "live_status": run.live_status,
                "progress": run.progress,
                "run_id": run.id,
                "outputs": run.outputs(self.origin),
            }
        if changed:
            logger.info("Simulator run %s is %s", run.id, status)
        # Like upstream: every status change; progress ticks only when intermediate status was asked.
        if changed or run.webhook_intermediate_status:
            self._enqueue(run, payload)
        return True

    # Webhook deliveries: in order per run on a drain thread, never on a server thread.

    def _enqueue(self, run: SimRun, payload: dict[str, Any]) -> None:
        if not run.webhook or run.webhooks == "none":
            return
        with self._lock:
            if run.webhooks == "reorder":
                if payload["status"] not in TERMINAL_STATUSES:
                    run.held.append(payload)
                    return
                # Terminal first, then the held intermediate ones, then a stale "running" again.
                stale = next((p for p in reversed(run.held) if p["status"] == "running"), None)
                stale = stale or {
                    **payload,
                    "status": "running",
                    "progress": 0.45,
                    "live_status": "Executing KSampler",
                    "outputs": [],
                }
                batch = [payload, *run.held, dict(stale)]
                run.held = []
            else:
                batch = [payload]
            run.outbox.extend(batch)
            if run.sending:
                return
            run.sending = True
        threading.Thread(
            target=self._drain, args=(run,), name=f"sim-webhook:{run.id[:8]}", daemon=True
        ).start()

    def _drain(self, run: SimRun) -> None:
        sequence = 0
        while True:
            with self._lock:
                if not run.outbox or run.discarded or self._stopping.is_set():
                    run.outbox.clear()
                    run.sending = False
                    return
                payload = run.outbox.popleft()
            sequence += 1
            try:
                if run.webhooks == "duplicate":
                    # One copy races the ordered one; every other event gets a third, later copy.
                    twin = threading.Thread(target=self._deliver, args=(run, payload), daemon=True)
                    twin.start()
                    self._deliver(run, payload)
                    if sequence % 2:
                        self._deliver(run, payload)
                    twin.join()
                else:
                    self._deliver(run, payload, force_get_retry=run.webhooks == "get_retry")
            except Exception:
                logger.exception("Simulator webhook delivery for run %s crashed", run.id)

    def _deliver(
        self, run: SimRun, payload: dict[str, Any], *, force_get_retry: bool = False
    ) -> None:
        """Up to WEBHOOK_ATTEMPTS tries; like upstream's bug, tries 2 and 3 are GETs with the body."""
        url = run.webhook or ""
        body = json.dumps(payload).encode()
        config = replace(self.config)
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            if self._stopping.is_set() or run.discarded:
                return
            method = "POST" if attempt == 1 else "GET"
            status_code: int | None = None
            error = ""
            try:
                response = self._http.request(
                    method,
                    url,
                    content=body,
                    headers={"Content-Type": "application/json"},
                    timeout=config.webhook_timeout,
                )
                status_code = response.status_code
            except Exception as exc:  # refused, timed out, bad URL, client closed by stop()
                error = f"{type(exc).__name__}: {exc}"
            record = Delivery(
                run.id, method, url, payload, attempt, status_code, error, time.time()
            )
            with self._lock:
                self._deliveries.append(record)
            logger.info(
                "Simulator webhook %s %s for run %s → %s",
                method,
                payload["status"],
                run.id,
                status_code if status_code is not None else error,
            )
            if record.delivered and not (force_get_retry and attempt == 1):
                return
            if attempt < WEBHOOK_ATTEMPTS and self._stopping.wait(config.webhook_retry_delay):
                return
