"""The app's URLs plus ``/bench/trivial``: the physical limit of a Django view on this server.

The trivial view goes through the same middleware stack as every page but touches no database
(no session is read, no user is loaded), so its throughput is what gunicorn + Django can do at all.
"""

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.http import require_GET

from config.urls import urlpatterns as app_urlpatterns


@require_GET
def trivial(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


urlpatterns = [path("bench/trivial", trivial, name="bench_trivial"), *app_urlpatterns]
