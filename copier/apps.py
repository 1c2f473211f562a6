from django.apps import AppConfig


class CopierConfig(AppConfig):
    name = "copier"
    verbose_name = "Copier"
