"""The API keys settings page: create (the key is shown once), list and revoke."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from apikeys.forms import ApiKeyForm
from apikeys.models import ApiKey
from apikeys.services import ApiKeyRefused, api_key_create, api_key_revoke

TEMPLATE = "apikeys/api_keys.html"


def _get_api_key_for_user(request: HttpRequest, key_id: int) -> ApiKey:
    api_key = ApiKey.objects.for_user(request.user).filter(pk=key_id).first()
    if api_key is None:
        raise Http404("No such API key.")
    return api_key


def _render(
    request: HttpRequest,
    *,
    form: ApiKeyForm,
    new_key: ApiKey | None = None,
    plaintext: str = "",
    revoked_key: ApiKey | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "form": form,
        "api_keys": ApiKey.objects.for_user(request.user),
        "new_key": new_key,
        "plaintext": plaintext,
        "revoked_key": revoked_key,
    }
    template = f"{TEMPLATE}#panel" if request.htmx else TEMPLATE
    return render(request, template, context, status=status)


# never_cache: the answer to a creation carries the only copy of the key anyone will ever see.
@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _render(request, form=ApiKeyForm())
    form = ApiKeyForm(request.POST)
    if not form.is_valid():
        return _render(request, form=form, status=400)
    try:
        new_key, plaintext = api_key_create(user=request.user, name=form.cleaned_data["name"])
    except ApiKeyRefused as exc:
        form.add_error("name", exc.message)
        return _render(request, form=form, status=400)
    # Rendered, not redirected: the plaintext must not travel through a session or a URL.
    return _render(request, form=ApiKeyForm(), new_key=new_key, plaintext=plaintext)


@never_cache
@login_required
@require_POST
def api_key_revoke_view(request: HttpRequest, key_id: int) -> HttpResponse:
    api_key = _get_api_key_for_user(request, key_id)
    api_key_revoke(api_key=api_key)
    if request.htmx:
        # The swapped panel says it itself: a flash message would only show on the next full page.
        return _render(request, form=ApiKeyForm(), revoked_key=api_key)
    messages.success(
        request,
        _("The key “%(name)s” was revoked. Requests using it now fail.") % {"name": api_key.name},
    )
    return redirect("api_keys")
