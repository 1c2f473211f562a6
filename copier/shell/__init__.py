"""The project shell: what runs the copier as a Django and Celery project, and nothing of
the copying itself. The settings, the Celery app, the URLs and the WSGI entry point; the
middleware, the health check, the checks of the environment at start, the log format and
the client's address as far as it can be trusted. The domain and the services do not import
it (tests/test_layering.py)."""
