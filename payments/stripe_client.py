"""The thin layer between us and Stripe: configuration, money units and the API calls we make.

Every call goes through the official ``stripe`` library with its base URL taken from
``STRIPE_API_BASE``, so the test suite talks to a local HTTP fake instead of the network.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

import stripe
from django.conf import settings

# Stripe amounts are integers in the currency's smallest unit; most currencies have cents,
# these have none (https://docs.stripe.com/currencies#zero-decimal) ...
ZERO_DECIMAL_CURRENCIES = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
# ... and these have three decimals (Stripe requires the last digit to be 0).
THREE_DECIMAL_CURRENCIES = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])

# Creating a session is one quick call; never hold a request worker for long on it.
TIMEOUT_SECONDS = 20
NETWORK_RETRIES = 2


def checkout_enabled() -> bool:
    """Both keys set: packages are sold through Stripe Checkout (otherwise by hand)."""
    return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET)


def to_minor_units(price: Decimal, currency: str) -> int:
    """A package price as Stripe's integer amount (``Decimal("99.00")``, ``"USD"`` → 9900)."""
    code = currency.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        exponent = 0
    elif code in THREE_DECIMAL_CURRENCIES:
        exponent = 3
    else:
        exponent = 2
    return int((Decimal(price) * (10**exponent)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@lru_cache(maxsize=4)
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    # Cached per key and base so connections are reused, and a changed setting (tests) gets a
    # fresh client instead of a stale one.
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        max_network_retries=NETWORK_RETRIES,
        http_client=stripe.RequestsClient(timeout=TIMEOUT_SECONDS),
    )


def stripe_client() -> stripe.StripeClient:
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE)


def checkout_session_create(
    *,
    purchase_id: str,
    user_id: int,
    email: str,
    package_id: int,
    product_name: str,
    unit_amount: int,
    currency: str,
    success_url: str,
    cancel_url: str,
) -> dict[str, Any]:
    """Create a one-time-payment Checkout Session, returned as plain data. Raises
    ``stripe.StripeError`` on any failure.

    The purchase id is the idempotency key: a retried call can never open a second session.
    """
    metadata = {"user_id": str(user_id), "package_id": str(package_id), "purchase_id": purchase_id}
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": currency.lower(),
                    "unit_amount": unit_amount,
                    "product_data": {"name": product_name},
                },
            }
        ],
        "client_reference_id": str(user_id),
        "customer_email": email,
        "metadata": metadata,
        # Also on the PaymentIntent, so staff find the purchase from a charge in Stripe's dashboard.
        "payment_intent_data": {"metadata": metadata},
        "locale": "auto",
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    session = stripe_client().v1.checkout.sessions.create(
        params, {"idempotency_key": f"purchase-{purchase_id}"}
    )
    return session.to_dict()


def checkout_session_retrieve(session_id: str) -> dict[str, Any]:
    """The session as Stripe sees it now, as plain data (the same shape a webhook carries)."""
    return stripe_client().v1.checkout.sessions.retrieve(session_id).to_dict()
