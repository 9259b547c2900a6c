from django.urls import path

from payments import views

app_name = "payments"
urlpatterns = [
    path("dashboard/credits/buy/<int:package_id>/", views.checkout, name="checkout"),
    path(
        "dashboard/credits/purchases/<uuid:purchase_id>/success/",
        views.purchase_success,
        name="purchase_success",
    ),
    path(
        "dashboard/credits/purchases/<uuid:purchase_id>/cancelled/",
        views.purchase_cancelled,
        name="purchase_cancelled",
    ),
    path("webhooks/stripe/", views.stripe_webhook, name="stripe_webhook"),
]
