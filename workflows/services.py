"""Workflow writes that touch more than one row: syncing a workflow's input fields from the
deployment's ``input_types`` on ComfyDeploy."""

from __future__ import annotations

import math
import re

from django.db import transaction
from django.utils.translation import gettext as _

from generations.comfydeploy import ComfyDeployError, DeploymentInput, get_client
from workflows.models import Workflow, WorkflowInput

T = WorkflowInput.Type
_SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")


class WorkflowSyncError(Exception):
    """The sync could not run; nothing was changed. ``message`` is safe to show to staff."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _input_type(spec: DeploymentInput) -> str:
    if spec.enum_options:
        return T.CHOICE
    if "Image" in spec.class_type:
        return T.IMAGE_URL
    match spec.type.lower():
        case "integer" | "int":
            return T.INTEGER
        case "float" | "number":
            return T.NUMBER
        case "boolean" | "bool":
            return T.BOOLEAN
    # Prompts are long; other strings are one-liners.
    return T.LONG_TEXT if "prompt" in spec.input_id.lower() else T.TEXT


def _default_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    if isinstance(value, int | float | str):
        return str(value)[:2000]
    return ""  # lists and objects have no form equivalent


def _label(spec: DeploymentInput) -> str:
    label = spec.display_name or spec.input_id.replace("_", " ").replace("-", " ").capitalize()
    return label[:120]


def workflow_inputs_sync(*, workflow: Workflow) -> list[WorkflowInput]:
    """Make the workflow's input fields mirror the deployment's ``input_types`` upstream.

    Upstream decides which fields exist and their type, default, range and choices (new fields
    take its display name and description too). Labels, help texts, "required" and max lengths
    that staff edited here are kept. Fields gone upstream are removed (upstream ignores unknown
    inputs, so they would only confuse users). All or nothing: on any error nothing changes.
    """
    try:
        specs = get_client().get_deployment_inputs(workflow.deployment_id)
    except ComfyDeployError as exc:
        raise WorkflowSyncError(
            _("Could not read the deployment's inputs from ComfyDeploy: %(reason)s")
            % {"reason": exc.message}
        ) from exc
    if not specs:
        # An empty answer is far likelier a wrong deployment id than a workflow with no inputs;
        # wiping the form on it would break the workflow for every user.
        raise WorkflowSyncError(
            _(
                "ComfyDeploy reports no inputs for deployment %(id)s; nothing was changed. Check the deployment id."
            )
            % {"id": workflow.deployment_id}
        )
    seen: set[str] = set()
    for spec in specs:
        if not _SLUG.match(spec.input_id) or len(spec.input_id) > 100:
            raise WorkflowSyncError(
                _(
                    "The input id %(id)r cannot be used (letters, digits, - and _ only); nothing was changed."
                )
                % {"id": spec.input_id}
            )
        if spec.input_id in seen:
            raise WorkflowSyncError(
                _("ComfyDeploy lists the input %(id)r twice; nothing was changed.")
                % {"id": spec.input_id}
            )
        seen.add(spec.input_id)

    with transaction.atomic():
        existing = {
            f.input_id: f
            for f in WorkflowInput.objects.select_for_update().filter(workflow=workflow)
        }
        result: list[WorkflowInput] = []
        for position, spec in enumerate(specs):
            field = existing.pop(spec.input_id, None)
            if field is None:
                field = WorkflowInput(
                    workflow=workflow,
                    input_id=spec.input_id,
                    label=_label(spec),
                    help_text=spec.description[:300],
                )
                field.type = _input_type(spec)
                field.default = _default_text(spec.default_value)
                # A prompt with nothing to fall back on must be filled in; the rest is optional.
                field.required = field.type == T.LONG_TEXT and not field.default
            field.type = _input_type(spec)
            field.default = _default_text(spec.default_value)
            field.min_value = spec.min_value
            field.max_value = spec.max_value
            field.choices = "\n".join(o.strip() for o in spec.enum_options if o.strip())
            field.position = position
            field.save()
            result.append(field)
        if existing:
            WorkflowInput.objects.filter(pk__in=[f.pk for f in existing.values()]).delete()
    return result
