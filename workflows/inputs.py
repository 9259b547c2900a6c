"""A workflow's input schema turned into a Django form: one validator for the dashboard and the API.

Unknown keys are dropped (the form only reads its own fields); types, required fields, lengths,
ranges and choices are enforced; the cleaned values are JSON-ready and keyed by ``input_id``.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from workflows.models import Workflow, WorkflowInput

T = WorkflowInput.Type
_TRUE_WORDS = {"1", "true", "yes", "on"}


class InputsInvalid(Exception):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("invalid inputs")
        self.errors = errors


def typed_default(field: WorkflowInput) -> Any:
    raw = field.default.strip()
    if raw == "":
        return None
    try:
        if field.type == T.INTEGER:
            return int(float(raw))
        if field.type == T.NUMBER:
            return float(raw)
    except ValueError:
        return None
    if field.type == T.BOOLEAN:
        return raw.lower() in _TRUE_WORDS
    return field.default


def _encodable(value: str) -> None:
    # JSON bodies can carry lone surrogates ("\ud800"), which neither PostgreSQL nor ComfyDeploy
    # accept; refused here they are a 400 instead of a database error after the charge.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            _("This text contains invalid characters; remove them and try again."),
            code="invalid_characters",
        ) from None


def _form_field(field: WorkflowInput) -> forms.Field:
    common = {
        "label": field.label,
        "required": field.required,
        "help_text": field.help_text,
        "initial": typed_default(field),
    }
    limits = {"min_value": field.min_value, "max_value": field.max_value}
    match field.type:
        case T.LONG_TEXT:
            return forms.CharField(
                max_length=field.effective_max_length,
                widget=forms.Textarea(attrs={"rows": 4}),
                validators=[_encodable],
                **common,
            )
        case T.INTEGER:
            return forms.IntegerField(
                min_value=None if limits["min_value"] is None else int(limits["min_value"]),
                max_value=None if limits["max_value"] is None else int(limits["max_value"]),
                **common,
            )
        case T.NUMBER:
            return forms.FloatField(**limits, **common)
        case T.BOOLEAN:
            # An unticked box is a valid "no"; "required" makes no sense for a yes/no.
            common["required"] = False
            return forms.BooleanField(**common)
        case T.CHOICE:
            options = field.choice_list
            choices = [(o, o) for o in options]
            if not field.required:
                choices = [("", "—"), *choices]
            return forms.ChoiceField(choices=choices, **common)
        case T.IMAGE_URL:
            return forms.URLField(
                max_length=2000, assume_scheme="https", validators=[_encodable], **common
            )
        case _:
            return forms.CharField(
                max_length=field.effective_max_length, validators=[_encodable], **common
            )


def inputs_form_class(fields: Iterable[WorkflowInput]) -> type[forms.Form]:
    """A Form class for a workflow's ordered input fields."""
    attrs = {f.input_id: _form_field(f) for f in fields}
    return type("WorkflowInputsForm", (forms.Form,), attrs)


def inputs_form(
    workflow: Workflow, data: Mapping | None = None, initial: Mapping | None = None
) -> forms.Form:
    return inputs_form_class(workflow.inputs.all())(data=data, initial=initial)


def _json_type_errors(fields: Iterable[WorkflowInput], data: Mapping) -> dict[str, list[str]]:
    """JSON callers must send the right JSON types (a form post sends only strings)."""
    errors: dict[str, list[str]] = {}
    for field in fields:
        if field.input_id not in data or data[field.input_id] is None:
            continue
        value = data[field.input_id]
        ok = {
            T.INTEGER: isinstance(value, int) and not isinstance(value, bool),
            T.NUMBER: isinstance(value, int | float) and not isinstance(value, bool),
            T.BOOLEAN: isinstance(value, bool),
        }.get(field.type, isinstance(value, str))
        if not ok:
            expected = {
                T.INTEGER: _("a whole number"),
                T.NUMBER: _("a number"),
                T.BOOLEAN: _("true or false"),
            }.get(field.type, _("a string"))
            errors[field.input_id] = [_("Expected %(expected)s.") % {"expected": expected}]
    return errors


def inputs_validate(*, workflow: Workflow, data: Mapping, json: bool = False) -> dict[str, Any]:
    """Return the cleaned inputs, or raise InputsInvalid with per-field messages.

    Fields left out fall back to their default; empty optional fields are not sent upstream.
    """
    if not isinstance(data, Mapping):
        raise InputsInvalid({"inputs": [_("Inputs must be an object of input ids to values.")]})
    fields = list(workflow.inputs.all())
    if json:
        errors = _json_type_errors(fields, data)
        if errors:
            raise InputsInvalid(errors)
        form_data = {}
        for field in fields:
            value = data.get(field.input_id)
            if value is None:
                value = typed_default(field)
            if field.type == T.BOOLEAN:
                if value:
                    form_data[field.input_id] = "on"
            elif value is not None:
                form_data[field.input_id] = str(value) if not isinstance(value, str) else value
        data = form_data
    form = inputs_form_class(fields)(data=data)
    if not form.is_valid():
        raise InputsInvalid({k: [str(m) for m in v] for k, v in form.errors.items()})
    cleaned: dict[str, Any] = {}
    for field in fields:
        value = form.cleaned_data.get(field.input_id)
        if value in (None, "") and field.type != T.BOOLEAN:
            continue
        cleaned[field.input_id] = value
    return cleaned
