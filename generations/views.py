"""The creator's pages: dashboard (pick a workflow, generate, live cards), history and detail.

Every page renders whole; an htmx request gets the named partial of the same template. Credits are
only ever moved by the services (``generation_start`` charges, the lifecycle refunds).
"""

import uuid
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from credits.models import LedgerEntry
from credits.services import CreditError, InsufficientCredits, balance_get
from generations.models import Generation
from generations.services import (
    GenerationRefused,
    TooManyActiveGenerations,
    generation_refresh_if_stale,
    generation_start,
)
from workflows.inputs import InputsInvalid, inputs_form
from workflows.models import Workflow

HISTORY_PAGE_SIZE = 12
DASHBOARD = "generations/dashboard.html"
# htmx listens for this event to refresh the Generate button (balance and cap may have changed).
CREDITS_CHANGED = "credits-changed"


# --- Helpers ------------------------------------------------------------------------------------


def _wants_partial(request: HttpRequest) -> bool:
    """An htmx swap wants a fragment; a history restore (back button) needs the whole page."""
    return bool(request.htmx) and not request.htmx.history_restore_request


def _render(
    request: HttpRequest, template: str, partial: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    name = f"{template}#{partial}" if _wants_partial(request) else template
    response = render(request, name, context, status=status)
    # Same URL, two representations: caches must keep them apart.
    patch_vary_headers(response, ("HX-Request",))
    return response


def _get_generation_for_user(request: HttpRequest, generation_id: uuid.UUID) -> Generation:
    """The signed-in user's generation, or 404 (anyone else's is indistinguishable from missing)."""
    generation = (
        Generation.objects.for_user(request.user)
        .select_related("workflow")
        .filter(pk=generation_id)
        .first()
    )
    if generation is None:
        raise Http404
    return generation


def _get_active_workflow(slug: str) -> Workflow:
    workflow = Workflow.objects.active().with_inputs().filter(slug=slug).first()
    if workflow is None:
        raise Http404
    return workflow


def _generate_state(request: HttpRequest, workflow: Workflow) -> dict[str, Any]:
    """What the Generate button needs: can the user afford one more run, and is there room?"""
    balance = balance_get(user=request.user)
    active_count = Generation.objects.for_user(request.user).active().count()
    cap_reached = active_count >= settings.MAX_CONCURRENT_RUNS
    short = balance < workflow.cost
    return {
        "selected": workflow,
        "balance_now": balance,
        "active_count": active_count,
        "max_runs": settings.MAX_CONCURRENT_RUNS,
        "cap_reached": cap_reached,
        "short_of_credits": short,
        "short_by": max(0, workflow.cost - balance),
        "blocked": cap_reached or short,
    }


def _prefill_from(request: HttpRequest, workflow: Workflow) -> dict[str, Any] | None:
    """The inputs of one of the user's earlier runs of this workflow ("run again")."""
    try:
        source_id = uuid.UUID(request.GET.get("from", ""))
    except ValueError:
        return None
    source = (
        Generation.objects.for_user(request.user)
        .filter(pk=source_id, workflow=workflow)
        .values_list("inputs", flat=True)
        .first()
    )
    return source if isinstance(source, dict) else None


def _dashboard_context(
    request: HttpRequest,
    *,
    workflows: list[Workflow],
    selected: Workflow | None,
    form: Form | None = None,
    error: str = "",
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "workflows": workflows,
        "selected": selected,
        "form": form,
        "error": error,
        "active_generations": Generation.objects.for_user(request.user)
        .active()
        .select_related("workflow")
        .order_by("-created_at"),
    }
    if selected is not None:
        if form is None:
            context["form"] = inputs_form(selected, initial=_prefill_from(request, selected))
        context.update(_generate_state(request, selected))
    return context


# --- Dashboard ----------------------------------------------------------------------------------


@require_GET
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    workflows = list(Workflow.objects.active().with_inputs())
    slug = request.GET.get("workflow")
    if slug:
        selected = next((w for w in workflows if w.slug == slug), None)
        if selected is None:
            raise Http404
    else:
        # The first workflow is ready to use: a new user sees a form, not a choice to make.
        selected = workflows[0] if workflows else None
    context = _dashboard_context(request, workflows=workflows, selected=selected)
    return _render(request, DASHBOARD, "workflow-picker", context)


@require_GET
@login_required
def generate_actions(request: HttpRequest, slug: str) -> HttpResponse:
    """The Generate button and its explanation, refreshed by htmx after a charge or a refund."""
    workflow = _get_active_workflow(slug)
    if not _wants_partial(request):
        return redirect(f"{reverse('dashboard')}?{urlencode({'workflow': slug})}")
    response = render(request, f"{DASHBOARD}#generate-actions", _generate_state(request, workflow))
    patch_vary_headers(response, ("HX-Request",))
    return response


@require_POST
@login_required
def generation_create(request: HttpRequest, slug: str) -> HttpResponse:
    """Start a run. Refusals (bad inputs 400, short of credits 402, cap 429) re-render the form
    with the reason and move nothing."""
    workflow = _get_active_workflow(slug)
    try:
        generation = generation_start(user=request.user, workflow=workflow, inputs=request.POST)
    except InputsInvalid:
        return _refused(request, workflow, _("Please correct the highlighted fields."), 400)
    except InsufficientCredits as exc:
        return _refused(request, workflow, exc.message, 402)
    except TooManyActiveGenerations as exc:
        return _refused(request, workflow, exc.message, 429)
    except (GenerationRefused, CreditError) as exc:
        return _refused(request, workflow, exc.message, 409)

    if not _wants_partial(request):
        if generation.is_refunded_status:
            messages.error(
                request,
                generation.error_display
                or _("The run could not start. Your credits were refunded."),
            )
        else:
            messages.success(
                request, _("Your image is on its way. It appears below when it is ready.")
            )
        return redirect(f"{reverse('dashboard')}?{urlencode({'workflow': slug})}")
    response = render(
        request, f"{DASHBOARD}#generation-card", {"generation": generation, "oob": True}, status=201
    )
    response["HX-Trigger"] = CREDITS_CHANGED
    return response


def _refused(request: HttpRequest, workflow: Workflow, error: str, status: int) -> HttpResponse:
    form = inputs_form(workflow, data=request.POST)
    form.is_valid()  # binds the per-field errors for display
    workflows = list(Workflow.objects.active().with_inputs())
    context = _dashboard_context(
        request, workflows=workflows, selected=workflow, form=form, error=error
    )
    response = _render(request, DASHBOARD, "workflow-panel", context, status=status)
    if _wants_partial(request):
        # The form posted towards the runs list; a refusal belongs in the form instead.
        response["HX-Retarget"] = "#workflow-panel"
        response["HX-Reswap"] = "outerHTML"
    return response


@require_GET
@login_required
def generation_card(request: HttpRequest, generation_id: uuid.UUID) -> HttpResponse:
    """One live card, polled every 3 s by htmx until the generation is terminal."""
    generation = _get_generation_for_user(request, generation_id)
    if not _wants_partial(request):
        return redirect("generation_detail", generation_id=generation.id)
    generation = generation_refresh_if_stale(generation=generation)
    response = render(
        request, f"{DASHBOARD}#generation-card", {"generation": generation, "oob": True}
    )
    patch_vary_headers(response, ("HX-Request",))
    if generation.is_terminal:
        response["HX-Trigger"] = CREDITS_CHANGED
    return response


# --- History and detail -------------------------------------------------------------------------


@require_GET
@login_required
def history(request: HttpRequest) -> HttpResponse:
    generations = (
        Generation.objects.for_user(request.user)
        .select_related("workflow")
        .order_by("-created_at", "-id")
    )
    page = Paginator(generations, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    return _render(request, "generations/history.html", "gallery", {"page": page})


@require_GET
@login_required
def generation_detail(request: HttpRequest, generation_id: uuid.UUID) -> HttpResponse:
    generation = _get_generation_for_user(request, generation_id)
    generation = generation_refresh_if_stale(generation=generation)
    labels = dict(generation.workflow.inputs.values_list("input_id", "label"))
    inputs = [
        {"key": key, "label": labels.get(key, key), "value": value}
        for key, value in (generation.inputs or {}).items()
    ]
    context = {
        "generation": generation,
        "inputs": inputs,
        "events": generation.events.all(),
        "ledger_entries": LedgerEntry.objects.filter(generation=generation).order_by(
            "created_at", "id"
        ),
        "can_run_again": generation.workflow.is_active,
    }
    return render(request, "generations/detail.html", context)
