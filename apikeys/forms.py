from django import forms
from django.utils.translation import gettext_lazy as _

from apikeys.services import NAME_MAX_LENGTH


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label=_("Name"),
        max_length=NAME_MAX_LENGTH,
        help_text=_("Something to recognise it by, e.g. “laptop script” or “Zapier”."),
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
