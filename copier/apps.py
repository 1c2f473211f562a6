from django.apps import AppConfig


class CopierConfig(AppConfig):
    name = "copier"
    verbose_name = "Copier"

    def ready(self) -> None:
        """Register the tasks by name in every process, not only in workers: the publisher
        sends by name, and eager mode (the replay, tests) runs a task only if it is known."""
        from copier import tasks  # noqa: F401
