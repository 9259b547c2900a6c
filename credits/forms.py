"""The staff "adjust credits" form (admin). The credits service has the last word on every rule;
the form only gives field-level messages for the obvious mistakes before anything is attempted."""

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _


class AdjustCreditsForm(forms.Form):
    amount = forms.IntegerField(
        label=_("Amount"),
        help_text=_("Whole credits: positive adds, negative removes (for example 10 or -5)."),
    )
    reason = forms.CharField(
        label=_("Reason"),
        max_length=500,
        help_text=_("Required. Recorded in the ledger with your name."),
        widget=forms.TextInput(attrs={"size": 60}),
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # Read per instance so tests and deployments can change the limit in settings.
        limit = settings.MAX_ADJUSTMENT_CREDITS
        self.fields["amount"].widget.attrs.update({"min": -limit, "max": limit, "step": 1})

    def clean_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        limit = settings.MAX_ADJUSTMENT_CREDITS
        if amount == 0:
            raise forms.ValidationError(_("The amount cannot be zero."))
        if abs(amount) > limit:
            raise forms.ValidationError(
                _("An adjustment is limited to %(limit)s credits either way."),
                params={"limit": f"{limit:,}"},
            )
        return amount

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError(_("A reason is required: it is recorded in the ledger."))
        return reason
