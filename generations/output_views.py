"""Serving stored generation outputs from local media (FileSystemStorage).

Generation images are private: instead of a public ``/media/`` they are served by this view, only
to the generation's owner (and staff). It answers at the very URL ``default_storage.url(name)``
produces (``MEDIA_URL`` + name), so the same ``output_url`` works for local media and S3. Scripts
may fetch with their API key (``Authorization: Bearer``) instead of a session.
"""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth.views import redirect_to_login
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from apikeys.services import api_key_user_from_header
from generations.models import Generation
from generations.outputs import THUMBNAIL_CONTENT_TYPE, output_storage_dir


def _get_generation_for_viewer(
    request: HttpRequest, user_id: int, generation_id: UUID
) -> Generation:
    generation = Generation.objects.filter(pk=generation_id, user_id=user_id).first()
    if generation is None or (generation.user_id != request.user.pk and not request.user.is_staff):
        raise Http404("No such image.")
    return generation


# Not @login_required: a Bearer API key must work too. Without either, it behaves the same
# (redirect to the login page).
@require_GET
def generation_output_file(
    request: HttpRequest, user_id: int, generation_id: UUID, filename: str
) -> HttpResponse:
    presented, key_user = api_key_user_from_header(request.headers.get("Authorization", ""))
    if presented:
        if key_user is None:
            return JsonResponse(
                {
                    "error": "not_authenticated",
                    "detail": "The API key is not valid or was revoked.",
                },
                status=401,
            )
        request.user = key_user
    elif not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    generation = _get_generation_for_viewer(request, user_id, generation_id)
    name = f"{output_storage_dir(generation)}/{filename}"
    content_type = None
    for item in generation.outputs:
        if item.get("file") == name:
            content_type = item.get("content_type")
        elif item.get("thumbnail") == name:
            content_type = THUMBNAIL_CONTENT_TYPE
    if content_type is None:
        raise Http404("No such image.")
    try:
        stored = default_storage.open(name, "rb")
    except (FileNotFoundError, OSError):
        raise Http404("No such image.") from None
    response = FileResponse(stored, content_type=content_type)
    # Private: a shared cache must never hand one user's image to another.
    response["Cache-Control"] = "private, max-age=86400"
    return response
