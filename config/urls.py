from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

from config import views
from generations.api import api
from generations.webhooks import comfydeploy_webhook

urlpatterns = [
    path("", views.landing, name="landing"),
    path("healthz", views.healthz, name="healthz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path(
        "webhooks/comfydeploy/<uuid:generation_id>/<str:token>/",
        comfydeploy_webhook,
        name="comfydeploy_webhook",
    ),
    path("", include("generations.urls")),
    path("", include("payments.urls")),
]
if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
