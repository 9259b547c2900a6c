import json
import logging
import uuid

import stripe
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from credits.models import CreditPackage
from payments.models import Purchase
from payments.services import (
    MalformedEvent,
    PurchaseRefused,
    purchase_refresh_if_stale,
    purchase_start,
    stripe_event_process,
)
from payments.stripe_client import checkout_enabled

logger = logging.getLogger("payments")


def _get_purchase_for_user(request: HttpRequest, purchase_id: uuid.UUID) -> Purchase:
    """The signed-in user's own purchase; anyone else's is a 404, like one that does not exist."""
    return get_object_or_404(Purchase, pk=purchase_id, user=request.user)


@require_POST
def checkout(request: HttpRequest, package_id: int) -> HttpResponse:
    """Buy button: open a Stripe Checkout Session for the package and send the browser there."""
    if not request.user.is_authenticated:
        # Not @login_required: after signing in, come back to the packages, not to this POST-only URL.
        return redirect_to_login(reverse("credits"))
    package = get_object_or_404(CreditPackage, pk=package_id)
    try:
        _purchase, url = purchase_start(user=request.user, package=package)
    except PurchaseRefused as exc:
        messages.error(request, exc.message)
        return redirect("credits")
    # 303: the browser follows with a GET to Stripe's hosted page.
    return HttpResponseRedirect(url, status=303)


@never_cache
@require_GET
@login_required
def purchase_success(request: HttpRequest, purchase_id: uuid.UUID) -> HttpResponse:
    """Where Stripe sends the buyer back. Shows the purchase as we know it; credits come only
    from Stripe itself (the webhook, or our own server-side check of a late one)."""
    purchase = purchase_refresh_if_stale(purchase=_get_purchase_for_user(request, purchase_id))
    template = "payments/success.html#status" if request.htmx else "payments/success.html"
    response = render(request, template, {"purchase": purchase})
    patch_vary_headers(response, ("HX-Request",))
    return response


@never_cache
@require_GET
@login_required
def purchase_cancelled(request: HttpRequest, purchase_id: uuid.UUID) -> HttpResponse:
    purchase = _get_purchase_for_user(request, purchase_id)
    return render(request, "payments/cancelled.html", {"purchase": purchase})


# Stripe cannot send our CSRF token: authenticity comes from the Stripe-Signature header (an
# HMAC of the timestamped body with the endpoint secret), checked before anything is read. This
# and the ComfyDeploy webhook are the only csrf_exempt views.
@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Stripe → app events. 400 for anything not signed by Stripe; 200 for every authentic
    event, including duplicates and ones we ignore, so Stripe stops retrying them."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not checkout_enabled():
        raise Http404("Stripe payments are not configured.")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > settings.WEBHOOK_MAX_BODY_BYTES:
        return JsonResponse({"error": "payload_too_large"}, status=413)
    body = request.body
    if len(body) > settings.WEBHOOK_MAX_BODY_BYTES:
        return JsonResponse({"error": "payload_too_large"}, status=413)
    try:
        # The verification half of stripe.Webhook.construct_event (HMAC-SHA256 compared in
        # constant time, timestamp within the tolerance so old deliveries cannot be replayed);
        # we parse the JSON ourselves, as plain data, because the library's object builder
        # raises on some well-signed but odd bodies.
        stripe.WebhookSignature.verify_header(
            body,
            request.headers.get("Stripe-Signature", ""),
            secret,
            tolerance=settings.STRIPE_WEBHOOK_TOLERANCE,
        )
        event = json.loads(body)
    except stripe.SignatureVerificationError as exc:
        logger.warning("Stripe webhook refused: %s", exc.user_message or exc)
        return JsonResponse({"error": "bad_signature"}, status=400)
    except (ValueError, UnicodeDecodeError):
        return JsonResponse({"error": "malformed_body"}, status=400)
    if not isinstance(event, dict):
        return JsonResponse({"error": "malformed_body"}, status=400)
    try:
        record = stripe_event_process(event=event)
    except MalformedEvent as exc:
        logger.warning("Stripe webhook with a malformed event: %s", exc)
        return JsonResponse({"error": "malformed_event", "detail": str(exc)}, status=400)
    return JsonResponse({"received": True, "outcome": record.outcome if record else "skipped"})
