"""The test project's settings: the middleware and INSTRUMENTOR as the docs set them up."""

from __future__ import annotations

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.integrations.django_project.urls"
INSTALLED_APPS: list[str] = []
USE_TZ = True
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "instrumentor.integrations.django.AnalyticsMiddleware",
]
INSTRUMENTOR = {
    "RESOLVER": "tests.integrations.django_project.views.resolve_identity",
    "RATE": 1.0,
    "BURST": 5,
}
LOGGING_CONFIG = None
# For the page of the browser test (views.page): Django's templates render {{ csrf_token }}.
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates"}]
