"""JSON API under /api/v1/ (django-ninja), documented at /api/v1/openapi.json.

Same rules as the pages: own objects only (anyone else's is 404), the same services, and errors
shaped ``{"error": "<code>", "detail": "<text>", ...}``.
"""

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from django.conf import settings
from django.core.paginator import EmptyPage, Paginator
from django.core.validators import slug_re
from django.http import Http404, HttpRequest, HttpResponse
from ninja import Header, NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import SessionAuth

from apikeys.auth import ApiKeyAuth, InvalidApiKey
from credits.models import LedgerEntry
from credits.services import InsufficientCredits, balance_get
from generations.idempotency import KEY_MAX_LENGTH, idempotency_run, request_fingerprint
from generations.models import Generation, Status
from generations.outputs import outputs_for_api
from generations.services import GenerationRefused, generation_refresh_if_stale, generation_start
from workflows.inputs import InputsInvalid, typed_default
from workflows.models import Workflow

PAGE_SIZE = 20

api = NinjaAPI(
    title="Comfy Credits API",
    version="1",
    description="Spend credits on image generations. Authenticate with a personal API key "
    "(`Authorization: Bearer <key>`, created at /dashboard/settings/api-keys/; no CSRF token "
    "needed) or the session cookie (unsafe methods then need the X-CSRFToken header).",
    urls_namespace="api",
    docs_url=None,  # the interactive docs would load scripts from a CDN, which our CSP forbids
    # The key first: a Bearer request is settled before SessionAuth's CSRF check runs.
    auth=[ApiKeyAuth(), SessionAuth()],
)


# --- Schemas --------------------------------------------------------------------------------------


class ErrorOut(Schema):
    error: str
    detail: str


class ValidationErrorOut(ErrorOut):
    errors: dict[str, list[str]]


class MeOut(Schema):
    email: str
    balance: int
    active_generations: int
    max_concurrent_runs: int


class WorkflowInputOut(Schema):
    input_id: str
    type: str
    label: str
    required: bool
    default: Any = None
    help_text: str = ""
    max_length: int | None = None
    min_value: float | None = None
    max_value: float | None = None
    choices: list[str] = []


class WorkflowOut(Schema):
    slug: str
    name: str
    description: str
    cost: int
    inputs: list[WorkflowInputOut]


class WorkflowList(Schema):
    results: list[WorkflowOut]


class OutputOut(Schema):
    url: str
    type: str


class GenerationOut(Schema):
    id: UUID
    workflow: str
    status: Status
    cost: int
    inputs: dict[str, Any]
    outputs: list[OutputOut]
    error: str
    progress: float
    live_status: str
    created_at: datetime
    updated_at: datetime


class UpstreamErrorOut(ErrorOut):
    generation: GenerationOut


class GenerationPage(Schema):
    results: list[GenerationOut]
    next: str | None
    previous: str | None


class LedgerEntryOut(Schema):
    id: int
    kind: LedgerEntry.Kind
    amount: int
    balance_after: int
    reason: str
    generation: UUID | None
    created_at: datetime


class LedgerPage(Schema):
    results: list[LedgerEntryOut]
    next: str | None
    previous: str | None


class GenerationIn(Schema):
    workflow: str
    inputs: dict[str, Any] = {}


# --- Errors ---------------------------------------------------------------------------------------


def _error(request: HttpRequest, status: int, code: str, detail: str, **extra: Any) -> HttpResponse:
    return api.create_response(request, {"error": code, "detail": detail, **extra}, status=status)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    for item in exc.errors:
        loc = [
            str(part)
            for part in item.get("loc", [])
            if part not in ("body", "payload", "query", "path")
        ]
        errors.setdefault(".".join(loc) or "body", []).append(str(item.get("msg", "invalid")))
    return _error(request, 400, "validation_error", "The request is not valid.", errors=errors)


@api.exception_handler(AuthenticationError)
def _auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    if isinstance(exc, InvalidApiKey):
        return _error(request, 401, "not_authenticated", exc.message)
    return _error(
        request,
        401,
        "not_authenticated",
        "Send an API key (Authorization: Bearer <key>) or sign in.",
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    code = {403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "error"
    )
    if "CSRF" in str(exc):
        return _error(request, 403, "csrf_failed", "Send the CSRF token in the X-CSRFToken header.")
    if exc.status_code == 400:
        # An unparseable body: the documented 400 shape (validation_error with per-field errors).
        return _error(request, 400, "validation_error", str(exc), errors={"body": [str(exc)]})
    return _error(request, exc.status_code, code, str(exc))


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, "not_found", str(exc) or "Not found.")


# --- Helpers --------------------------------------------------------------------------------------


def _generation_out(generation: Generation) -> dict[str, Any]:
    return {
        "id": generation.id,
        "workflow": generation.workflow.slug,
        "status": generation.status,
        "cost": generation.cost,
        "inputs": generation.inputs,
        "outputs": outputs_for_api(generation.outputs),  # our stored copies once persisted
        "error": generation.error_text,
        "progress": generation.progress,
        "live_status": generation.live_status,
        "created_at": generation.created_at,
        "updated_at": generation.updated_at,
    }


def _page(
    request: HttpRequest, queryset: Any, page: int
) -> tuple[list[Any], str | None, str | None]:
    paginator = Paginator(queryset, PAGE_SIZE)
    try:
        current = paginator.page(page)
    except EmptyPage:
        return [], None, None

    def link(number: int) -> str:
        query = request.GET.copy()
        query["page"] = str(number)
        return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")

    next_url = link(current.next_page_number()) if current.has_next() else None
    previous_url = link(current.previous_page_number()) if current.has_previous() else None
    return list(current.object_list), next_url, previous_url


def _workflow_out(workflow: Workflow) -> dict[str, Any]:
    return {
        "slug": workflow.slug,
        "name": workflow.name,
        "description": workflow.description,
        "cost": workflow.cost,
        "inputs": [
            {
                "input_id": field.input_id,
                "type": field.type,
                "label": field.label,
                "required": field.required,
                "default": typed_default(field),
                "help_text": field.help_text,
                "max_length": field.effective_max_length
                if field.type in ("text", "long_text")
                else None,
                "min_value": field.min_value,
                "max_value": field.max_value,
                "choices": field.choice_list,
            }
            for field in workflow.inputs.all()
        ],
    }


# --- Endpoints ------------------------------------------------------------------------------------


@api.get(
    "/me", response={200: MeOut, 401: ErrorOut}, summary="The signed-in user's balance and limits"
)
def me(request: HttpRequest) -> dict[str, Any]:
    user = request.auth
    return {
        "email": user.email,
        "balance": balance_get(user=user),
        "active_generations": Generation.objects.for_user(user).active().count(),
        "max_concurrent_runs": settings.MAX_CONCURRENT_RUNS,
    }


@api.get(
    "/workflows",
    response={200: WorkflowList, 401: ErrorOut},
    summary="Active workflows and their inputs",
)
def workflows(request: HttpRequest) -> dict[str, Any]:
    return {"results": [_workflow_out(w) for w in Workflow.objects.active().with_inputs()]}


@api.post(
    "/generations",
    response={
        201: GenerationOut,
        400: ValidationErrorOut,
        401: ErrorOut,
        402: ErrorOut,
        403: ErrorOut,
        404: ErrorOut,
        409: ErrorOut,
        429: ErrorOut,
        502: UpstreamErrorOut,
    },
    summary="Start a generation (charges the workflow's cost; refunded automatically on failure)",
)
def create_generation(
    request: HttpRequest,
    payload: GenerationIn,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=KEY_MAX_LENGTH,
            description="Any unique string (e.g. a UUID) to retry safely: within 24 h the same key "
            "with the same body returns the original response (status and body) without a second "
            "charge or run, even for concurrent requests; the same key with a different body is "
            "409 idempotency_key_reused.",
        ),
    ] = None,
) -> tuple[int, dict[str, Any]]:
    if idempotency_key is not None:
        return idempotency_run(
            user=request.auth,
            key=idempotency_key,
            fingerprint=request_fingerprint(request.body),
            execute=lambda: _start_generation(request, payload),
        )
    return _start_generation(request, payload)


def _start_generation(request: HttpRequest, payload: GenerationIn) -> tuple[int, dict[str, Any]]:
    # Anything that is not a slug is unknown (and a lone surrogate would crash the query).
    workflow = (
        Workflow.objects.active().with_inputs().filter(slug=payload.workflow).first()
        if slug_re.fullmatch(payload.workflow)
        else None
    )
    if workflow is None:
        raise Http404("No active workflow with that slug.")
    try:
        generation = generation_start(
            user=request.auth, workflow=workflow, inputs=payload.inputs, json=True
        )
    except InputsInvalid as exc:
        return 400, {
            "error": "validation_error",
            "detail": "Some inputs are not valid.",
            "errors": exc.errors,
        }
    except InsufficientCredits as exc:
        return 402, {"error": exc.code, "detail": exc.message}
    except GenerationRefused as exc:
        return 429, {"error": exc.code, "detail": exc.message}
    if generation.status == Status.FAILED:
        return 502, {
            "error": "upstream_error",
            "detail": generation.error_text,
            "generation": _generation_out(generation),
        }
    return 201, _generation_out(generation)


@api.get(
    "/generations",
    response={200: GenerationPage, 400: ValidationErrorOut, 401: ErrorOut},
    summary="Own generations, newest first",
)
def list_generations(request: HttpRequest, page: int = 1) -> dict[str, Any]:
    queryset = (
        Generation.objects.for_user(request.auth)
        .select_related("workflow")
        .order_by("-created_at", "-id")
    )
    items, next_url, previous_url = _page(request, queryset, max(page, 1))
    return {
        "results": [_generation_out(g) for g in items],
        "next": next_url,
        "previous": previous_url,
    }


@api.get(
    "/generations/{generation_id}",
    response={200: GenerationOut, 400: ValidationErrorOut, 401: ErrorOut, 404: ErrorOut},
    summary="One own generation (re-checked upstream when stale)",
)
def get_generation(request: HttpRequest, generation_id: UUID) -> dict[str, Any]:
    generation = (
        Generation.objects.for_user(request.auth)
        .select_related("workflow")
        .filter(pk=generation_id)
        .first()
    )
    if generation is None:
        raise Http404("No such generation.")
    generation = generation_refresh_if_stale(generation=generation)
    return _generation_out(generation)


@api.get(
    "/ledger",
    response={200: LedgerPage, 400: ValidationErrorOut, 401: ErrorOut},
    summary="Own ledger entries, newest first",
)
def ledger(request: HttpRequest, page: int = 1) -> dict[str, Any]:
    items, next_url, previous_url = _page(
        request, LedgerEntry.objects.for_user(request.auth), max(page, 1)
    )
    return {
        "results": [
            {
                "id": e.id,
                "kind": e.kind,
                "amount": e.amount,
                "balance_after": e.balance_after,
                "reason": e.reason,
                "generation": e.generation_id,
                "created_at": e.created_at,
            }
            for e in items
        ],
        "next": next_url,
        "previous": previous_url,
    }
