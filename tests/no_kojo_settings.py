"""A project that names kojo's Tasks backend but forgot "kojo" in INSTALLED_APPS (check kojo.E020).

Its own app imports Django Tasks as it loads, as a project using tasks does (a module defining one):
Django 6 registers the Tasks checks only once ``django.tasks`` is imported, and the backport from its
app.
"""

from importlib.util import find_spec

from django.apps import AppConfig

SECRET_KEY = "not-secret"
USE_TZ = True


class ProjectConfig(AppConfig):
    name = "tests"
    label = "project_without_kojo"

    def ready(self) -> None:
        from kojo.tasks import compat  # noqa: F401  (imports django.tasks or the backport)


INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "tests.no_kojo_settings.ProjectConfig",
]
if find_spec("django.tasks") is None:
    INSTALLED_APPS.insert(0, "django_tasks")  # the backport runs the backends' checks from its app
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
TASKS = {"default": {"BACKEND": "kojo.tasks.KojoBackend"}}
