"""The copy engine: groups, followers, events, decisions and the Celery tasks."""

from copier.shell.celery import app as celery_app

__all__ = ("celery_app",)
