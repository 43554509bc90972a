"""The test project's URLs: the app's views and the instrumentor include."""

from __future__ import annotations

from django.urls import include, path

from instrumentor.integrations.django import urls as instrumentor_urls
from tests.integrations.django_project import views

urlpatterns = [
    path("analytics/", include(instrumentor_urls)),
    path("whoami", views.whoami),
    path("async", views.async_view),
    path("raise", views.fail),
    path("thread", views.thread),
    path("plain", views.plain),
    path("context", views.context),
    path("signup", views.signup),
    path("asignup", views.asignup),
    path("page", views.page),
    path("stream", views.stream),
    path("cookie-page", views.cookie_page),
]
