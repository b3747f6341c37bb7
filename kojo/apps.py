from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class KojoConfig(AppConfig):
    """Registers checks, receivers and every app's ``kojo_jobs`` module (job types); runs no queries."""

    name = "kojo"
    verbose_name = "kojo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from kojo import checks, messaging  # noqa: F401  (registers the system checks and receivers)
        from kojo.tasks import worker  # noqa: F401  (registers the worker that runs Django tasks)

        autodiscover_modules("kojo_jobs")
        from django.db.models.signals import post_migrate

        from kojo.registry import sync_after_migrate

        post_migrate.connect(sync_after_migrate, sender=self, dispatch_uid="kojo.registry.sync")
