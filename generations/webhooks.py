"""ComfyDeploy → app webhook. ComfyDeploy does not sign its webhooks, so the URL is the secret:
it carries an HMAC of the generation id. The body is trusted for nothing but the run's status and
outputs, and only when its run_id is the one we were given when we queued the run."""

import json
import logging
import uuid

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from generations.comfydeploy import ComfyDeployError, parse_run_snapshot
from generations.models import Generation, GenerationEvent
from generations.services import generation_apply_snapshot, generation_recheck, webhook_token_valid

logger = logging.getLogger("generations.webhook")


def _answer(status: int, error: str = "", detail: str = "") -> JsonResponse:
    if status < 400:
        return JsonResponse({"ok": True}, status=status)
    return JsonResponse({"error": error, "detail": detail}, status=status)


# The only CSRF-exempt view of the app: it is called by ComfyDeploy, not by a browser, and the
# capability token in its URL is what authenticates the call.
@csrf_exempt
@require_http_methods(["GET", "POST"])
def comfydeploy_webhook(request: HttpRequest, generation_id: uuid.UUID, token: str) -> HttpResponse:
    if not webhook_token_valid(generation_id, token):
        return _answer(404, "not_found", "Unknown webhook.")
    # Only what the checks below read (the apply re-reads the row under its lock): the full row,
    # with its JSON columns, made this read a fifth of a delivery's CPU (bench/RESULTS.md).
    generation = Generation.objects.only("id", "run_id", "status").filter(pk=generation_id).first()
    if generation is None:
        return _answer(404, "not_found", "Unknown webhook.")

    if request.method == "GET":
        # ComfyDeploy's retries arrive as GET: never trust a body there, ask the API instead.
        generation_recheck(generation=generation, source=GenerationEvent.Source.WEBHOOK)
        return _answer(200)

    limit = settings.WEBHOOK_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _answer(400, "bad_request", "Invalid Content-Length.")
    if declared > limit:
        return _answer(413, "too_large", f"Webhook bodies are limited to {limit} bytes.")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _answer(413, "too_large", f"Webhook bodies are limited to {limit} bytes.")
    try:
        payload = json.loads(body)
        snapshot = parse_run_snapshot(payload)
    except (ValueError, RecursionError, ComfyDeployError):
        # ValueError covers UnicodeDecodeError; RecursionError is deeply nested JSON.
        return _answer(400, "bad_request", "The body is not a ComfyDeploy run update.")

    if not generation.run_id and not generation.is_terminal:
        # The run was accepted upstream but its run_id is not stored yet (the queue call is
        # still returning). A 4xx makes ComfyDeploy retry, and the retry is re-fetched.
        return _answer(409, "not_ready", "This run is not registered yet; retry later.")
    # A terminal generation without a run_id is one whose queue call failed on our side after
    # ComfyDeploy had created the run: generation_apply_snapshot adopts its run_id and records
    # its outputs without moving credits.
    if generation.run_id and snapshot.run_id.lower() != generation.run_id.lower():
        logger.warning(
            "webhook run_id mismatch",
            extra={**generation.log_context, "body_run_id": snapshot.run_id[:64]},
        )
        return _answer(400, "run_id_mismatch", "The run_id does not belong to this webhook.")
    generation_apply_snapshot(
        generation_id=generation.id, snapshot=snapshot, source=GenerationEvent.Source.WEBHOOK
    )
    return _answer(200)
