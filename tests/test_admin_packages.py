"""Credit packages are managed from the admin: create, edit, deactivate, delete."""

from __future__ import annotations

import pytest
from django.urls import reverse

from credits.models import CreditPackage

pytest_plugins = ["tests.admin_fixtures"]
pytestmark = [pytest.mark.django_db]


def test_it_creates_edits_and_deletes_a_package(staff_client) -> None:
    created = staff_client.post(
        reverse("admin:credits_creditpackage_add"),
        {
            "name": "Creator",
            "credits": "300",
            "price": "249.00",
            "currency": "MXN",
            "is_active": "on",
            "position": "2",
        },
    )
    assert created.status_code == 302
    package = CreditPackage.objects.get(name="Creator")
    assert (package.credits, str(package.price), package.currency) == (300, "249.00", "MXN")

    edited = staff_client.post(
        reverse("admin:credits_creditpackage_change", args=[package.pk]),
        {
            "name": "Creator",
            "credits": "320",
            "price": "249.00",
            "currency": "MXN",
            "position": "2",
        },
    )
    assert edited.status_code == 302
    package.refresh_from_db()
    assert (package.credits, package.is_active) == (320, False)

    listed = staff_client.get(reverse("admin:credits_creditpackage_changelist"))
    assert b"Creator" in listed.content

    deleted = staff_client.post(
        reverse("admin:credits_creditpackage_delete", args=[package.pk]), {"post": "yes"}
    )
    assert deleted.status_code == 302
    assert not CreditPackage.objects.exists()


def test_it_refuses_a_package_without_credits(staff_client) -> None:
    response = staff_client.post(
        reverse("admin:credits_creditpackage_add"),
        {"name": "Empty", "credits": "0", "price": "1.00", "currency": "USD", "position": "0"},
    )

    assert response.status_code == 200
    assert not CreditPackage.objects.exists()
