from allauth.account.decorators import secure_admin_login
from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

from config import views
from generations.api import api
from generations.output_views import generation_output_file
from generations.webhooks import comfydeploy_webhook

# The admin signs in through allauth's login, so its rate limits cover the admin too.
admin.site.login = secure_admin_login(admin.site.login)

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
    path("", include("credits.urls")),
    path("", include("payments.urls")),
    path("", include("apikeys.urls")),
    # Stored generation images (local media): owner-only, at the URL default_storage.url() gives.
    # Listed before the DEBUG-only public media route below so it always wins.
    path(
        f"{settings.MEDIA_URL.strip('/')}/generations/<int:user_id>/<uuid:generation_id>/<str:filename>",
        generation_output_file,
        name="generation_output_file",
    ),
]
if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
