from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

DEFAULT_TEXT_MAX_LENGTH = 2000


class WorkflowQuerySet(models.QuerySet["Workflow"]):
    def active(self) -> "WorkflowQuerySet":
        return self.filter(is_active=True)

    def with_inputs(self) -> "WorkflowQuerySet":
        return self.prefetch_related("inputs")


class Workflow(models.Model):
    """A ComfyDeploy deployment offered to users at a price in credits."""

    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(_("slug"), max_length=80, unique=True)
    description = models.TextField(_("description"), blank=True)
    deployment_id = models.CharField(
        _("ComfyDeploy deployment id"),
        max_length=64,
        help_text=_("The deployment's UUID, from the ComfyDeploy dashboard."),
    )
    cost = models.PositiveIntegerField(
        _("cost in credits"), validators=[MinValueValidator(1)], help_text=_("Charged per run.")
    )
    is_active = models.BooleanField(
        _("active"), default=True, help_text=_("Inactive workflows are hidden and cannot be run.")
    )
    position = models.PositiveIntegerField(_("position"), default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WorkflowQuerySet.as_manager()

    class Meta:
        verbose_name = _("workflow")
        verbose_name_plural = _("workflows")
        ordering = ["position", "name"]
        constraints = [
            models.CheckConstraint(condition=Q(cost__gte=1), name="workflow_cost_positive")
        ]

    def __str__(self) -> str:
        return self.name


class WorkflowInput(models.Model):
    """One field of a workflow's form; ``input_id`` is the External input node's id upstream."""

    class Type(models.TextChoices):
        TEXT = "text", _("Text")
        LONG_TEXT = "long_text", _("Long text")
        INTEGER = "integer", _("Integer")
        NUMBER = "number", _("Number")
        BOOLEAN = "boolean", _("Yes / no")
        CHOICE = "choice", _("Choice")
        IMAGE_URL = "image_url", _("Image URL")

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="inputs")
    input_id = models.SlugField(
        _("input id"), max_length=100, allow_unicode=False, help_text=_("The input_id upstream.")
    )
    label = models.CharField(_("label"), max_length=120)
    type = models.CharField(_("type"), max_length=16, choices=Type.choices, default=Type.TEXT)
    required = models.BooleanField(_("required"), default=False)
    default = models.CharField(_("default"), max_length=2000, blank=True)
    help_text = models.CharField(_("help text"), max_length=300, blank=True)
    max_length = models.PositiveIntegerField(
        _("max length"), null=True, blank=True, help_text=_("For text; 2,000 when empty.")
    )
    min_value = models.FloatField(_("minimum"), null=True, blank=True)
    max_value = models.FloatField(_("maximum"), null=True, blank=True)
    choices = models.TextField(
        _("choices"), blank=True, help_text=_("For a choice: one option per line.")
    )
    position = models.PositiveIntegerField(_("position"), default=0)

    class Meta:
        verbose_name = _("input")
        verbose_name_plural = _("inputs")
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "input_id"], name="workflow_input_unique_id"
            ),
        ]

    def __str__(self) -> str:
        return self.input_id

    @property
    def choice_list(self) -> list[str]:
        return [line.strip() for line in self.choices.splitlines() if line.strip()]

    @property
    def effective_max_length(self) -> int:
        return self.max_length or DEFAULT_TEXT_MAX_LENGTH
