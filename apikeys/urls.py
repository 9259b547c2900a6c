from django.urls import path

from apikeys import views

urlpatterns = [
    path("dashboard/settings/api-keys/", views.api_keys, name="api_keys"),
    path(
        "dashboard/settings/api-keys/<int:key_id>/revoke/",
        views.api_key_revoke_view,
        name="api_key_revoke",
    ),
]
