from django.apps import AppConfig


class DevkitConfig(AppConfig):
    name = "devkit"
    verbose_name = "Development kit"

    def ready(self) -> None:
        """Register the bench's task by name in every process, as the copier's are: eager
        mode runs a task only if it is known, and the bench's worker finds it by Celery's
        autodiscovery of each installed app's `tasks` module."""
        from devkit import tasks  # noqa: F401
