"""What production refuses to start with: missing, placeholder or weak secrets.

Django-free (the settings call it before Django is configured). Every problem
is collected, so that an operator fixing `.env` sees all of them at once
rather than one per restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from core.keys import KeyListError, keys_split

ENVIRONMENTS = ("local", "production")
# What `.env.example` ships with: a value still containing it was never set.
PLACEHOLDERS = ("change-me", "changeme")
SECRET_KEY_MIN_LENGTH = 50  # Django's own `check --deploy` threshold (security.W009)
SECRET_KEY_MIN_UNIQUE = 5

MAKE_DJANGO_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"


def copier_env(value: str | None) -> str:
    """The mode, or ValueError: a typo must not fall back to a mode nobody chose."""
    env = value or "local"  # unset or empty: local
    if env not in ENVIRONMENTS:
        raise ValueError(f"COPIER_ENV={env!r} is not a mode of the copier: use one of "
                         f"{', '.join(ENVIRONMENTS)} (unset means local).")
    return env


def second_factor_required(environ: Mapping[str, str]) -> bool:
    """COPIER_REQUIRE_2FA: whether every user who may trade must enrol a second factor
    before reaching anything. On by default in production only; the settings and the local
    runner's banner read it here, so both say the same."""
    default = "1" if environ.get("COPIER_ENV") == "production" else "0"
    return environ.get("COPIER_REQUIRE_2FA", default).strip().lower() in {"1", "true", "yes",
                                                                          "on"}


def is_placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(p in lowered for p in PLACEHOLDERS)


def production_problems(environ: Mapping[str, str]) -> list[str]:
    """Everything wrong with the production environment; empty when it may start."""
    return [
        *_secret_key(environ.get("SECRET_KEY", "")),
        *_encryption_key(environ.get("COPIER_ENCRYPTION_KEY", "")),
        *_database_url(environ.get("DATABASE_URL", "")),
        *_postgres_password(environ.get("POSTGRES_PASSWORD", "")),
        *_flower_basic_auth(environ.get("FLOWER_BASIC_AUTH", "")),
    ]


def _secret_key(value: str) -> list[str]:
    if not value:
        return [f"SECRET_KEY is not set: generate one with {MAKE_DJANGO_KEY}"]
    if is_placeholder(value):
        return [f"SECRET_KEY is the .env.example placeholder: generate one with "
                f"{MAKE_DJANGO_KEY}"]
    if value.startswith("django-insecure-"):
        return ["SECRET_KEY is Django's insecure development key: generate one with "
                f"{MAKE_DJANGO_KEY}"]
    if len(value) < SECRET_KEY_MIN_LENGTH:
        return [f"SECRET_KEY is too short ({len(value)} characters, at least "
                f"{SECRET_KEY_MIN_LENGTH}): generate one with {MAKE_DJANGO_KEY}"]
    if len(set(value)) < SECRET_KEY_MIN_UNIQUE:
        return [f"SECRET_KEY has too few different characters: generate one with "
                f"{MAKE_DJANGO_KEY}"]
    return []


def _encryption_key(value: str) -> list[str]:
    """One key, or several separated by commas while a key is rotated (core.keys)."""
    try:
        keys_split(value)
    except KeyListError as exc:
        return [str(exc) + (" (it is the .env.example placeholder)"
                            if is_placeholder(value) else "")]
    return []


def _database_url(value: str) -> list[str]:
    if not value:
        return ["DATABASE_URL is not set (docker-compose.yml builds it from POSTGRES_PASSWORD)"]
    password = urlsplit(value).password or ""
    if is_placeholder(password):
        return ["DATABASE_URL has the .env.example placeholder as its password: set "
                "POSTGRES_PASSWORD in .env (url-safe characters)"]
    return []


def _postgres_password(value: str) -> list[str]:
    if value and is_placeholder(value):
        return ["POSTGRES_PASSWORD is the .env.example placeholder: set a password of "
                "url-safe characters (it goes into DATABASE_URL as it is)"]
    return []


def _flower_basic_auth(value: str) -> list[str]:
    """Flower takes `user:password[,user:password...]`; it is optional for the other apps."""
    if not value:
        return []
    pairs = [pair.partition(":") for pair in value.split(",")]
    if any(not user or not sep or not password for user, sep, password in pairs):
        return ["FLOWER_BASIC_AUTH must be user:password (several separated by commas)"]
    if any(is_placeholder(password) for _, _, password in pairs):
        return ["FLOWER_BASIC_AUTH has the .env.example placeholder as a password"]
    return []
