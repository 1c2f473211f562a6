# One image for web, worker, beat and Flower (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=copier.shell.settings
WORKDIR /app

# The product only: devkit/ (the local runner, replay, bench, demo, local venues) and tests/
# stay out (tests/test_packaging.py).
COPY pyproject.toml README.md ./
COPY core ./core
COPY accounts ./accounts
COPY brokers ./brokers
COPY copier ./copier
COPY manage.py ./
RUN pip install . && useradd --create-home --uid 10001 copier \
    && COPIER_ENV=local python manage.py collectstatic --noinput -v 0 \
    && chown -R copier /app
USER copier
EXPOSE 8000 5555
CMD ["gunicorn", "copier.shell.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3"]
