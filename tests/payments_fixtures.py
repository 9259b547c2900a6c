"""A local HTTP fake of the few Stripe endpoints we use, and signed Stripe events.

A test module loads the fixtures with ``pytest_plugins = ["tests.payments_fixtures"]`` and
``pytestmark = pytest.mark.usefixtures("in_english")``, and imports the helpers.

The fake speaks Stripe's wire format (form-encoded requests, JSON answers, Bearer auth) on
loopback; ``STRIPE_API_BASE`` points the official library at it, so no test touches the network.
Events are signed here with Stripe's documented scheme, not with the library under test:
``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.utils import translation

from credits.models import CreditPackage

SECRET_KEY = "sk_test_fake_key"
WEBHOOK_SECRET = "whsec_test_secret"
WEBHOOK_URL = "/webhooks/stripe/"


def _unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``line_items[0][price_data][currency]=usd`` → nested dicts (list indexes stay string keys)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


class FakeStripe:
    """State of the fake: sessions it created, requests it saw, and a failure switch."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.fail_status: int | None = None
        self.url = ""
        self._lock = threading.Lock()

    def session_create(self, params: dict[str, Any]) -> dict[str, Any]:
        price = params["line_items"]["0"]["price_data"]
        session_id = f"cs_test_{secrets.token_hex(12)}"
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": params.get("mode"),
            "url": f"{self.url}/pay/{session_id}",
            "amount_total": int(price["unit_amount"]) * int(params["line_items"]["0"]["quantity"]),
            "currency": price["currency"],
            "client_reference_id": params.get("client_reference_id"),
            "customer_email": params.get("customer_email"),
            "metadata": params.get("metadata", {}),
            "payment_status": "unpaid",
            "status": "open",
            "payment_intent": None,
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
        }
        with self._lock:
            self.sessions[session_id] = session
        return session

    def pay(self, session_id: str) -> dict[str, Any]:
        """What Stripe's side looks like once the buyer paid."""
        session = self.sessions[session_id]
        session.update(
            payment_status="paid",
            status="complete",
            payment_intent=f"pi_test_{session_id[-12:]}",
        )
        return session


class _Handler(BaseHTTPRequestHandler):
    fake: FakeStripe

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Request-Id", f"req_{secrets.token_hex(6)}")
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {SECRET_KEY}":
            self._json(
                401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key"}}
            )
            return False
        return True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        path = urlsplit(self.path).path
        params = _unflatten(parse_qsl(raw, keep_blank_values=True))
        self.fake.requests.append(
            {"method": "POST", "path": path, "params": params, "headers": dict(self.headers)}
        )
        if not self._authorized():
            return
        if self.fake.fail_status:
            self._json(
                self.fake.fail_status,
                {"error": {"type": "api_error", "message": "The fake is failing on purpose."}},
            )
            return
        if path == "/v1/checkout/sessions":
            self._json(200, self.fake.session_create(params))
            return
        self._json(404, {"error": {"type": "invalid_request_error", "message": "Unknown path"}})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/pay/"):
            # Stands in for Stripe's hosted payment page.
            body = (
                b'<!doctype html><link rel="icon" href="data:,"><title>Fake Stripe Checkout</title>'
                b"<h1>Fake Stripe Checkout</h1>"
            )
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.fake.requests.append({"method": "GET", "path": path, "headers": dict(self.headers)})
        if not self._authorized():
            return
        prefix = "/v1/checkout/sessions/"
        if path.startswith(prefix) and path[len(prefix) :] in self.fake.sessions:
            self._json(200, self.fake.sessions[path[len(prefix) :]])
            return
        self._json(404, {"error": {"type": "invalid_request_error", "message": "No such session"}})


@pytest.fixture
def in_english(settings: Any) -> Iterator[None]:
    """Pages, messages and ledger reasons in English (the source strings the tests read)."""
    settings.LANGUAGE_CODE = "en"
    with translation.override("en"):
        yield


@pytest.fixture
def fake_stripe(settings: Any) -> Iterator[FakeStripe]:
    """A running fake Stripe API, with the app configured to use it (keys set)."""
    fake = FakeStripe()
    handler = type("Handler", (_Handler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = fake.url
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def creator_package(db: Any) -> CreditPackage:
    return CreditPackage.objects.create(
        name="Creator", credits=1500, price=Decimal("249.00"), currency="USD", position=1
    )


def sign(body: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value, by Stripe's documented scheme."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def make_event(
    event_type: str, obj: dict[str, Any], *, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": "2025-01-27.acacia",
        "created": int(time.time()),
        "type": event_type,
        "livemode": False,
        "pending_webhooks": 1,
        "data": {"object": obj},
    }


def completed_event(fake: FakeStripe, session_id: str, **overrides: Any) -> dict[str, Any]:
    """``checkout.session.completed`` for a session the buyer paid (fields overridable)."""
    session = dict(fake.pay(session_id))
    session.update(overrides)
    return make_event("checkout.session.completed", session)


def refund_event(
    *, payment_intent: str, amount: int, amount_refunded: int, currency: str = "usd"
) -> dict[str, Any]:
    charge = {
        "id": f"ch_test_{secrets.token_hex(8)}",
        "object": "charge",
        "amount": amount,
        "amount_refunded": amount_refunded,
        "currency": currency,
        "payment_intent": payment_intent,
        "refunded": amount_refunded >= amount,
        "status": "succeeded",
    }
    return make_event("charge.refunded", charge)


def post_event(client: Any, event: dict[str, Any] | str, **sign_kwargs: Any) -> Any:
    """POST an event to our webhook, signed (``body`` may be given as a string to sign as-is)."""
    body = event if isinstance(event, str) else json.dumps(event)
    return client.post(
        WEBHOOK_URL,
        data=body,
        content_type="application/json",
        headers={"Stripe-Signature": sign(body, **sign_kwargs)},
    )


def start_checkout(client: Any, package: CreditPackage) -> Any:
    """Press Buy: POST to our checkout view (which calls the fake)."""
    return client.post(f"/dashboard/credits/buy/{package.pk}/")


@pytest.fixture
def alice_purchase(
    alice_client: Any, fake_stripe: FakeStripe, creator_package: CreditPackage
) -> Any:
    """Alice pressed Buy on the Creator package: a pending purchase with its Stripe session."""
    from payments.models import Purchase

    response = start_checkout(alice_client, creator_package)
    assert response.status_code == 303
    return Purchase.objects.get(user__email="alice@example.com")
