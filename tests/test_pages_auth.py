"""allauth's password-reset and email-confirmation pages, in the product's design, walked end to
end with the test client (the email link included)."""

import re

import pytest
from django.core import mail
from django.test import Client

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "An-entirely-new-passphrase-77"


def _link(message: mail.EmailMessage) -> str:
    match = re.search(r"https?://[^/\s]+(/accounts/\S+/)", message.body)
    assert match, message.body
    return match.group(1)


def _assert_product_page(html: str) -> None:
    assert 'class="card auth-card"' in html
    assert '<link rel="stylesheet" href="/static/css/app.css">' in html


def test_it_walks_the_password_reset_pages(client: Client, alice) -> None:
    sent = client.post("/accounts/password/reset/", {"email": "alice@example.com"}, follow=True)

    _assert_product_page(sent.text)
    assert sent.redirect_chain[-1][0] == "/accounts/password/reset/done/"
    (message,) = mail.outbox
    form = client.get(_link(message), follow=True)
    _assert_product_page(form.text)
    assert 'name="password1"' in form.text

    mismatch = client.post(
        form.redirect_chain[-1][0], {"password1": NEW_PASSWORD, "password2": "something else"}
    )
    assert 'class="field-errors"' in mismatch.text
    done = client.post(
        form.redirect_chain[-1][0],
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
        follow=True,
    )
    _assert_product_page(done.text)
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert not alice.check_password(PASSWORD)


def test_it_explains_a_used_or_broken_reset_link(client: Client) -> None:
    response = client.get("/accounts/password/reset/key/1-broken-token/", follow=True)

    _assert_product_page(response.text)
    assert 'href="/accounts/password/reset/"' in response.text  # a way to ask for a new link


def test_it_confirms_an_email_address_from_the_signup_email(client: Client) -> None:
    client.post(
        "/accounts/signup/",
        {"email": "dora@example.com", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    (message,) = mail.outbox
    page = client.get(_link(message))

    _assert_product_page(page.text)
    confirmed = client.post(_link(message), follow=True)
    assert confirmed.status_code == 200
    assert "Verificado" in client.get("/accounts/email/").text
