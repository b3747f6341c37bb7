"""A project that names kojo's Tasks backend but forgot "kojo" in INSTALLED_APPS (check kojo.E020)."""

from importlib.util import find_spec

SECRET_KEY = "not-secret"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
if find_spec("django.tasks") is None:
    INSTALLED_APPS.insert(0, "django_tasks")  # the backport runs the backends' checks from its app
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
TASKS = {"default": {"BACKEND": "kojo.tasks.KojoBackend"}}
