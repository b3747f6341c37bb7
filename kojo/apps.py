import sys

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

# The commands that run jobs, which need no TASKS setting to run Django tasks.
SERVING_COMMANDS = ("kojo_server", "kojo_run")


class KojoConfig(AppConfig):
    """Registers checks, receivers and every app's ``kojo_jobs`` module (job types); runs no queries."""

    name = "kojo"
    verbose_name = "kojo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from kojo import checks, messaging  # noqa: F401  (registers the system checks and receivers)
        from kojo.tasks import worker  # noqa: F401  (registers the worker that runs Django tasks)

        if len(sys.argv) > 1 and sys.argv[1] in SERVING_COMMANDS:
            # Before this app's kojo_jobs and the checks import modules holding tasks (kojo.tasks.serving).
            from kojo.tasks.serving import default_to_kojo

            default_to_kojo()

        autodiscover_modules("kojo_jobs")
        from django.db.models.signals import post_migrate

        from kojo.registry import sync_after_migrate

        post_migrate.connect(sync_after_migrate, sender=self, dispatch_uid="kojo.registry.sync")
