from django.urls import path

from generations import views

# Page routes (the webhook and the JSON API are routed in config/urls.py).
urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/history/", views.history, name="history"),
    path(
        "dashboard/workflows/<slug:slug>/generate/",
        views.generation_create,
        name="generation_create",
    ),
    path(
        "dashboard/workflows/<slug:slug>/actions/", views.generate_actions, name="generate_actions"
    ),
    path(
        "dashboard/generations/<uuid:generation_id>/",
        views.generation_detail,
        name="generation_detail",
    ),
    path(
        "dashboard/generations/<uuid:generation_id>/card/",
        views.generation_card,
        name="generation_card",
    ),
]
