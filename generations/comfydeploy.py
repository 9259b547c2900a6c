"""ComfyDeploy HTTP client (httpx).

Everything the app says to ComfyDeploy goes through :class:`ComfyDeployClient`; every way a call can
go wrong comes back as one exception type, :class:`ComfyDeployError`, whose ``message`` is a sentence
fit to store on a generation and show to its owner. The upstream facts this code relies on
(statuses, error shapes, output layout) are in the team's comfydeploy-api.md notes.

Two rules shape the client:

* A queue POST is never retried: ComfyDeploy has no idempotency key, so a retry could start (and bill)
  a second run. The client has no retrying transport and no retry loop.
* Parsing is lenient where upstream is loose (progress as fraction or percent, timestamps of any ISO
  precision, outputs of odd shapes) and strict only where the app cannot go on without a value (a run
  id, a status string).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from django.conf import settings

from generations.simulator import SIMULATOR_API_KEY

logger = logging.getLogger("generations.comfydeploy")

# The production base URL; settings.COMFY_DEPLOY_API_URL defaults to it.
DEFAULT_API_URL = "https://api.comfydeploy.com/api"

UPSTREAM_STATUSES = (
    "not-started",
    "queued",
    "started",
    "running",
    "uploading",
    "success",
    "failed",
    "timeout",
    "cancelled",
)
# Upstream never changes a run out of these.
UPSTREAM_TERMINAL_STATUSES = frozenset({"success", "failed", "timeout", "cancelled"})

# Where each media kind lives under an output's ``data`` and what the app calls it.
OUTPUT_MEDIA_KEYS = (("images", "image"), ("gifs", "video"), ("files", "file"), ("mesh", "mesh"))

# Upstream error details are echoed to end users: keep them short.
_MAX_DETAIL_CHARS = 300


class ComfyDeployError(Exception):
    """Any failed call to ComfyDeploy.

    ``kind`` says what happened, which matters for what the caller may assume:

    * ``"connect"``: the request never reached ComfyDeploy (refused, DNS, connect timeout, no free
      pooled connection) — or the connection broke in a way that is not a timeout.
    * ``"timeout"``: the request was sent but no full answer came in time; for a queue POST the run
      may exist upstream anyway.
    * ``"http"``: ComfyDeploy answered with a non-2xx status (``status_code`` is set).
    * ``"malformed"``: the answer (or, rarely, our own request body) was not the JSON we need.
    """

    KINDS = ("connect", "timeout", "http", "malformed")

    def __init__(self, message: str, *, kind: str, status_code: int | None = None) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown ComfyDeployError kind {kind!r}")
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status_code = status_code

    def __repr__(self) -> str:
        return f"ComfyDeployError({self.message!r}, kind={self.kind!r}, status_code={self.status_code!r})"


@dataclass(frozen=True)
class RunOutput:
    url: str
    type: str  # "image", "video", "file" or "mesh"
    output_id: str

    def as_dict(self) -> dict[str, str]:
        """The shape stored in ``Generation.outputs``."""
        return {"url": self.url, "type": self.type, "output_id": self.output_id}


@dataclass(frozen=True)
class RunSnapshot:
    run_id: str
    status: str  # the upstream status string, as given
    progress: float  # always within 0..1
    live_status: str
    outputs: list[RunOutput]
    created_at: datetime | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in UPSTREAM_TERMINAL_STATUSES


@dataclass(frozen=True)
class DeploymentInput:
    input_id: str
    type: str
    class_type: str
    default_value: Any
    min_value: float | None
    max_value: float | None
    display_name: str
    description: str
    enum_options: list[str]


# --- Parsing ------------------------------------------------------------------------------------


def parse_progress(value: object) -> float:
    """Normalise upstream progress to 0..1.

    Upstream sends a fraction in practice but documents 0..100, so anything above 1 is taken as a
    percentage. Junk (null, strings that are not numbers, NaN, booleans) counts as no progress.
    """
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return 0.0
    if not isinstance(value, int | float):
        return 0.0
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return 1.0 if value > 0 else 0.0
    if math.isnan(number):
        return 0.0
    if number > 1:
        number /= 100
    return min(1.0, max(0.0, number))


def parse_timestamp(value: object) -> datetime | None:
    """Lenient ISO-8601: ``Z`` or offsets, any fractional precision; naive means UTC; junk → None."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    # fromisoformat takes at most 6 fractional digits on older Pythons: trim the surplus.
    if "." in text:
        head, _, tail = text.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        if digits > 6:
            text = f"{head}.{tail[:6]}{tail[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except (ValueError, TypeError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _clean_text(value: object, *, limit: int = 255) -> str:
    """A single-line, bounded string from whatever upstream sent (None → "")."""
    if not isinstance(value, str):
        return ""
    text = "".join(ch if ch.isprintable() else " " for ch in value)
    return " ".join(text.split())[:limit]


def _iter_outputs(raw: object) -> Iterator[RunOutput]:
    """Media outputs of a run; anything of the wrong shape is skipped, never raised on."""
    if not isinstance(raw, list):
        return
    for item in raw:
        if not isinstance(item, dict):
            continue
        data = item.get("data")
        if not isinstance(data, dict):
            continue
        output_id = item.get("output_id")
        output_id = output_id if isinstance(output_id, str) else ""
        # Text outputs (data.text) carry no URL; the app shows media only, so they are skipped.
        for key, media_type in OUTPUT_MEDIA_KEYS:
            entries = data.get(key)
            if not isinstance(entries, list):
                continue
            for entry in entries:
                url = entry.get("url") if isinstance(entry, dict) else entry
                if isinstance(url, str) and url.strip():
                    yield RunOutput(url=url.strip(), type=media_type, output_id=output_id)


def parse_run_snapshot(payload: object) -> RunSnapshot:
    """A run's state from a ``GET /run/{id}`` body or a webhook body (``run_id`` instead of ``id``).

    Raises :class:`ComfyDeployError` (kind ``"malformed"``) when there is no usable run id or status,
    and nothing else whatever the JSON.
    """
    if not isinstance(payload, dict):
        raise ComfyDeployError("ComfyDeploy sent a run that is not a JSON object", kind="malformed")
    run_id = payload.get("id")
    if not isinstance(run_id, str) or not run_id.strip():
        run_id = payload.get("run_id")
    if not isinstance(run_id, str) or not run_id.strip():
        raise ComfyDeployError("ComfyDeploy sent a run without an id", kind="malformed")
    status = payload.get("status")
    if not isinstance(status, str) or not status.strip():
        raise ComfyDeployError("ComfyDeploy sent a run without a status", kind="malformed")
    return RunSnapshot(
        run_id=run_id.strip(),
        status=status.strip(),
        progress=parse_progress(payload.get("progress")),
        live_status=_clean_text(payload.get("live_status")),
        outputs=list(_iter_outputs(payload.get("outputs"))),
        created_at=parse_timestamp(payload.get("created_at")),
        queued_at=parse_timestamp(payload.get("queued_at")),
        started_at=parse_timestamp(payload.get("started_at")),
        ended_at=parse_timestamp(payload.get("ended_at")),
    )


def _number_or_none(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if not (isinstance(value, float) and math.isnan(value)) else None


def parse_deployment_inputs(payload: object) -> list[DeploymentInput]:
    """The ``input_types`` of a ``GET /deployment/{id}`` body; entries without an input_id are skipped."""
    if not isinstance(payload, dict):
        raise ComfyDeployError(
            "ComfyDeploy sent a deployment that is not a JSON object", kind="malformed"
        )
    raw = payload.get("input_types")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ComfyDeployError(
            "ComfyDeploy sent a deployment with invalid input_types", kind="malformed"
        )
    inputs: list[DeploymentInput] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        input_id = item.get("input_id")
        if not isinstance(input_id, str) or not input_id.strip():
            continue
        options = item.get("enum_options")
        enum_options = (
            [
                str(o)
                for o in options
                if isinstance(o, str | int | float) and not isinstance(o, bool)
            ]
            if isinstance(options, list)
            else []
        )
        inputs.append(
            DeploymentInput(
                input_id=input_id.strip(),
                type=_clean_text(item.get("type")) or "string",
                class_type=_clean_text(item.get("class_type")),
                default_value=item.get("default_value"),
                min_value=_number_or_none(item.get("min_value")),
                max_value=_number_or_none(item.get("max_value")),
                display_name=_clean_text(item.get("display_name")),
                description=_clean_text(item.get("description"), limit=2000),
                enum_options=enum_options,
            )
        )
    return inputs


def _error_detail(response: httpx.Response) -> str:
    """The readable part of a FastAPI error body (``detail`` as a string or a 422 list)."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    detail: object = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        parts = []
        for entry in detail[:5]:
            if not isinstance(entry, dict):
                continue
            loc = entry.get("loc")
            where = ".".join(str(p) for p in loc if p != "body") if isinstance(loc, list) else ""
            msg = entry.get("msg") if isinstance(entry.get("msg"), str) else "invalid"
            parts.append(f"{where}: {msg}" if where else msg)
        text = "; ".join(parts)
    elif isinstance(detail, str):
        text = detail
    elif detail is not None:
        text = json.dumps(detail, default=str)
    else:
        # Not FastAPI JSON (a proxy page, Starlette's plain-text 500): a snippet of the body.
        text = response.text  # httpx decodes with errors="replace": never raises
        if text.lstrip().startswith("<"):  # an HTML error page says nothing useful in one line
            text = ""
    return _clean_text(text, limit=_MAX_DETAIL_CHARS) or response.reason_phrase or "no detail"


def _seconds(value: float | None) -> str:
    return f"{value:g} s" if value is not None else "the time limit"


# --- Client -------------------------------------------------------------------------------------


class ComfyDeployClient:
    """One keep-alive ``httpx.Client`` to ComfyDeploy. Thread-safe; share one per process."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        connect_timeout: float,
        read_timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        # A key an HTTP header cannot carry is a configuration mistake: report it from each call
        # as a ComfyDeployError (so callers refund) rather than crash while building the client.
        self._config_error = "" if api_key.isascii() else "The ComfyDeploy API key is not valid"
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            headers={
                "Authorization": f"Bearer {api_key if api_key.isascii() else ''}",
                "Accept": "application/json",
                "User-Agent": "comfy-credits/1.0",
            },
            # Explicit on every phase: an unset limit would wait forever on a silent server.
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            limits=httpx.Limits(
                max_connections=50, max_keepalive_connections=10, keepalive_expiry=30
            ),
            # No retries anywhere: httpx's default transport has retries=0 and a custom one is the
            # caller's (tests'). A redirect from an API is a misconfiguration, not something to follow.
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ComfyDeployClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # The four calls the app makes.

    def queue_run(self, *, deployment_id: str, inputs: dict, webhook_url: str) -> str:
        """Queue a run of a deployment and return its run id. Never retried (see module docstring)."""
        body = {
            "deployment_id": deployment_id,
            "inputs": inputs,
            "webhook": webhook_url,
            "webhook_intermediate_status": False,
        }
        try:
            content = json.dumps(body, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            # A bug on our side, but the caller's contract is "ComfyDeployError only" (so it refunds).
            raise self._fail(
                ComfyDeployError("The inputs could not be sent as JSON", kind="malformed"),
                "queue",
                exc=exc,
            ) from exc
        data = self._request("POST", "run/deployment/queue", content=content, call="queue")
        run_id = data.get("run_id") if isinstance(data, dict) else None
        if not isinstance(run_id, str) or not run_id.strip():
            error = ComfyDeployError("ComfyDeploy's answer had no run_id", kind="malformed")
            raise self._fail(error, "queue")
        run_id = run_id.strip()
        logger.info(
            "Queued a ComfyDeploy run", extra={"run_id": run_id, "deployment_id": deployment_id}
        )
        return run_id

    def get_run(self, run_id: str) -> RunSnapshot:
        data = self._request("GET", f"run/{quote(run_id, safe='')}", call="get_run", run_id=run_id)
        try:
            snapshot = parse_run_snapshot(data)
        except ComfyDeployError as exc:
            raise self._fail(exc, "get_run", run_id=run_id) from None
        if snapshot.run_id.lower() != run_id.strip().lower():
            # Never apply another run's state to this one.
            raise self._fail(
                ComfyDeployError("ComfyDeploy answered about a different run", kind="malformed"),
                "get_run",
                run_id=run_id,
            )
        return snapshot

    def cancel_run(self, run_id: str) -> None:
        # The answer's shape differs between docs and code; only its status matters.
        self._request(
            "POST",
            f"run/{quote(run_id, safe='')}/cancel",
            call="cancel",
            run_id=run_id,
            parse=False,
        )
        logger.info("Cancelled a ComfyDeploy run", extra={"run_id": run_id})

    def get_deployment_inputs(self, deployment_id: str) -> list[DeploymentInput]:
        data = self._request(
            "GET", f"deployment/{quote(deployment_id, safe='')}", call="get_deployment"
        )
        try:
            return parse_deployment_inputs(data)
        except ComfyDeployError as exc:
            raise self._fail(exc, "get_deployment") from None

    # Plumbing.

    def _request(
        self,
        method: str,
        path: str,
        *,
        call: str,
        content: bytes | None = None,
        run_id: str | None = None,
        parse: bool = True,
    ) -> Any:
        if self._config_error:
            raise self._fail(
                ComfyDeployError(self._config_error, kind="connect"), call, run_id=run_id
            )
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = self._http.request(method, path, content=content, headers=headers)
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            error = ComfyDeployError(
                f"Could not connect to ComfyDeploy within {_seconds(self.connect_timeout)}",
                kind="connect",
            )
            raise self._fail(error, call, run_id=run_id, exc=exc) from exc
        except httpx.TimeoutException as exc:
            error = ComfyDeployError(
                f"ComfyDeploy did not answer within {_seconds(self.read_timeout)}", kind="timeout"
            )
            raise self._fail(error, call, run_id=run_id, exc=exc) from exc
        except httpx.ConnectError as exc:
            reason = "connection refused" if "refused" in str(exc).lower() else _short(exc)
            error = ComfyDeployError(f"Could not connect to ComfyDeploy ({reason})", kind="connect")
            raise self._fail(error, call, run_id=run_id, exc=exc) from exc
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            # RemoteProtocolError, ReadError, ProxyError, UnsupportedProtocol, …
            error = ComfyDeployError(
                f"The connection to ComfyDeploy failed ({_short(exc)})", kind="connect"
            )
            raise self._fail(error, call, run_id=run_id, exc=exc) from exc

        if not response.is_success:
            code = response.status_code
            verb = "refused the request" if code < 500 else "failed"
            error = ComfyDeployError(
                f"ComfyDeploy {verb} (HTTP {code}): {_error_detail(response)}",
                kind="http",
                status_code=code,
            )
            raise self._fail(error, call, run_id=run_id)
        if not parse:
            return None
        try:
            return response.json()
        except (ValueError, RecursionError) as exc:
            error = ComfyDeployError(
                "ComfyDeploy answered with invalid JSON",
                kind="malformed",
                status_code=response.status_code,
            )
            raise self._fail(error, call, run_id=run_id, exc=exc) from exc

    @staticmethod
    def _fail(
        error: ComfyDeployError,
        call: str,
        *,
        run_id: str | None = None,
        exc: BaseException | None = None,
    ) -> ComfyDeployError:
        """Log a failed call once, with its run id when known, and hand the error back to raise."""
        extra: dict[str, Any] = {"call": call, "kind": error.kind, "status_code": error.status_code}
        if run_id:
            extra["run_id"] = run_id
        if exc is not None:
            extra["exc_type"] = type(exc).__name__
        logger.warning("ComfyDeploy %s failed: %s", call, error.message, extra=extra)
        return error


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:120]


# --- The process-wide client --------------------------------------------------------------------

_client_lock = threading.Lock()
# (settings key, client) in one tuple so the lock-free fast path reads both atomically.
_cached: tuple[tuple[str, str, float, float], ComfyDeployClient] | None = None


def effective_connection() -> tuple[str, str]:
    """The (base URL, API key) the app uses, from settings.

    * ``COMFY_DEPLOY_API_KEY`` set: the real API at ``COMFY_DEPLOY_API_URL`` with that key.
    * ``COMFY_DEPLOY_API_KEY`` empty: the built-in simulator with ``SIMULATOR_API_KEY``, at
      ``SIMULATOR_URL`` if set; else at ``COMFY_DEPLOY_API_URL`` if that was changed from the
      production default (tests point it at a fake on loopback); else at
      ``http://127.0.0.1:{SIMULATOR_PORT}/api`` where ``manage.py simulator`` listens.
    """
    api_key = getattr(settings, "COMFY_DEPLOY_API_KEY", "") or ""
    api_url = (getattr(settings, "COMFY_DEPLOY_API_URL", "") or DEFAULT_API_URL).rstrip("/")
    if api_key:
        return api_url, api_key
    simulator_url = (getattr(settings, "SIMULATOR_URL", "") or "").rstrip("/")
    if simulator_url:
        return simulator_url, SIMULATOR_API_KEY
    if api_url != DEFAULT_API_URL:
        return api_url, SIMULATOR_API_KEY
    return f"http://127.0.0.1:{settings.SIMULATOR_PORT}/api", SIMULATOR_API_KEY


def using_simulator() -> bool:
    """True when no API key is configured, i.e. generations are served by the simulator."""
    return not getattr(settings, "COMFY_DEPLOY_API_KEY", "")


def get_client() -> ComfyDeployClient:
    """The shared client, rebuilt whenever the effective URL, key or timeouts change.

    Reusing one client keeps connections alive across requests; keying the cache on the settings
    lets tests (``override_settings``/pytest-django's ``settings``) point the app at a fake on a
    random port without any reset hook. A replaced client is left to the garbage collector rather
    than closed, because another thread may still be mid-request on it.
    """
    global _cached
    base_url, api_key = effective_connection()
    key = (
        base_url,
        api_key,
        float(settings.COMFY_DEPLOY_CONNECT_TIMEOUT),
        float(settings.COMFY_DEPLOY_READ_TIMEOUT),
    )
    cached = _cached
    if cached is not None and cached[0] == key:
        return cached[1]
    with _client_lock:
        if _cached is None or _cached[0] != key:
            client = ComfyDeployClient(
                base_url=key[0], api_key=key[1], connect_timeout=key[2], read_timeout=key[3]
            )
            _cached = (key, client)
        return _cached[1]
