"""Pressing Buy opens a Stripe Checkout Session for the package, priced from our database."""

import pytest

from credits.services import balance_get
from payments.models import Purchase
from tests.payments_fixtures import start_checkout

pytest_plugins = ["tests.payments_fixtures"]
pytestmark = pytest.mark.usefixtures("in_english")


def test_it_sends_the_buyer_to_stripe_checkout_for_the_package(
    alice, alice_client, fake_stripe, creator_package, settings
):
    settings.APP_URL = "https://credits.example.com"
    response = start_checkout(alice_client, creator_package)

    purchase = Purchase.objects.get(user=alice)
    assert response.status_code == 303
    assert response["Location"] == f"{fake_stripe.url}/pay/{purchase.stripe_session_id}"
    [call] = [r for r in fake_stripe.requests if r["path"] == "/v1/checkout/sessions"]
    params = call["params"]
    assert params["mode"] == "payment"
    assert params["line_items"]["0"] == {
        "quantity": "1",
        "price_data": {
            "currency": "usd",
            "unit_amount": "24900",
            "product_data": {"name": "Creator: 1500 credits"},
        },
    }
    assert params["client_reference_id"] == str(alice.pk)
    assert params["metadata"] == {
        "user_id": str(alice.pk),
        "package_id": str(creator_package.pk),
        "purchase_id": str(purchase.pk),
    }
    assert (
        params["success_url"]
        == f"https://credits.example.com/dashboard/credits/purchases/{purchase.pk}/success/"
    )
    assert (
        params["cancel_url"]
        == f"https://credits.example.com/dashboard/credits/purchases/{purchase.pk}/cancelled/"
    )
    # A retried request can never open a second session for the same purchase.
    assert call["headers"]["Idempotency-Key"] == f"purchase-{purchase.pk}"
    assert purchase.status == Purchase.Status.PENDING
    assert (purchase.package_name, purchase.credits, purchase.currency) == ("Creator", 1500, "USD")
    assert (purchase.price, purchase.amount_total) == (creator_package.price, 24900)
    # Nothing is credited before Stripe confirms the payment.
    assert balance_get(user=alice) == 5


def test_it_refuses_a_deactivated_package(alice, alice_client, fake_stripe, creator_package):
    creator_package.is_active = False
    creator_package.save()

    response = start_checkout(alice_client, creator_package)

    assert response.status_code == 302
    assert response["Location"] == "/dashboard/credits/"
    assert not Purchase.objects.exists()
    assert fake_stripe.requests == []
    [message] = [str(m) for m in response.wsgi_request._messages]
    assert "no longer on sale" in message


def test_it_says_so_when_stripe_cannot_open_the_checkout(
    alice, alice_client, fake_stripe, creator_package
):
    fake_stripe.fail_status = 500

    response = start_checkout(alice_client, creator_package)

    assert response.status_code == 302
    assert response["Location"] == "/dashboard/credits/"
    [message] = [str(m) for m in response.wsgi_request._messages]
    assert "Nothing was charged" in message
    assert Purchase.objects.get(user=alice).status == Purchase.Status.FAILED
    assert balance_get(user=alice) == 5


def test_it_refuses_checkout_when_stripe_is_not_configured(
    alice, alice_client, creator_package, settings
):
    settings.STRIPE_SECRET_KEY = ""
    settings.STRIPE_WEBHOOK_SECRET = ""

    response = start_checkout(alice_client, creator_package)

    assert response.status_code == 302
    assert not Purchase.objects.exists()


def test_it_sends_an_anonymous_buyer_to_sign_in_first(client, fake_stripe, creator_package):
    response = start_checkout(client, creator_package)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/dashboard/credits/")
    assert not Purchase.objects.exists()
    assert fake_stripe.requests == []


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_it_only_starts_a_checkout_on_post(alice_client, fake_stripe, creator_package, method):
    response = getattr(alice_client, method)(f"/dashboard/credits/buy/{creator_package.pk}/")

    assert response.status_code == 405
    assert not Purchase.objects.exists()


def test_it_answers_404_for_a_package_that_does_not_exist(alice_client, fake_stripe):
    assert alice_client.post("/dashboard/credits/buy/999999/").status_code == 404


def test_it_asks_the_buyer_to_write_to_us_when_stripe_refuses_the_request(
    alice, alice_client, fake_stripe, creator_package
):
    fake_stripe.fail_status = 400

    response = start_checkout(alice_client, creator_package)

    [message] = [str(m) for m in response.wsgi_request._messages]
    assert "did not accept this payment" in message
    assert "write to our team" in message
    assert Purchase.objects.get(user=alice).status == Purchase.Status.FAILED
