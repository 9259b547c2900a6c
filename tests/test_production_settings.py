"""Production settings: `check --deploy` is clean, and the strict defaults really are strict.

Each check runs `manage.py` in a subprocess with production variables (DEBUG off, a long random
key, real hosts, PostgreSQL), because settings are read once at start-up from the environment.
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Variables a developer's shell may carry that would change what is being checked.
_SCRUBBED = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "APP_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "EMAIL_HOST",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "DJANGO_SETTINGS_MODULE",
)


def production_env(**overrides: str) -> dict[str, str]:
    """What an operator sets behind a TLS proxy with a managed PostgreSQL (README, Deploy)."""
    env = {
        k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.startswith("SECURE_")
    }
    env.update(
        {
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "credits.example.com",
            "CSRF_TRUSTED_ORIGINS": "https://credits.example.com",
            "APP_URL": "https://credits.example.com",
            "DATABASE_URL": "postgres://app:secret@db.example.com:5432/comfy?sslmode=require",
            "EMAIL_HOST": "smtp.example.com",
            "SECURE_PROXY_SSL_HEADER": "true",
        }
    )
    env.update(overrides)
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_settings(env: dict[str, str], *names: str) -> dict:
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {list(names)!r}}}, default=str))"
    )
    result = manage("shell", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_it_passes_check_deploy_with_production_variables() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_it_passes_check_deploy_on_a_neon_pooled_endpoint_with_a_connection_pool() -> None:
    env = production_env(
        DATABASE_URL="postgres://app:secret@ep-cool-name-pooler.eu-central-1.aws.neon.tech/comfy"
        "?sslmode=require&channel_binding=require",
        DB_DISABLE_SERVER_SIDE_CURSORS="true",
        DB_POOL="true",
        DB_POOL_MAX_SIZE="8",
    )

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode == 0, result.stdout + result.stderr


def test_it_fails_check_deploy_when_production_is_left_on_plain_http() -> None:
    """The check is a real gate: a deploy that turns the protections off does not pass it."""
    env = production_env(
        SECURE_SSL_REDIRECT="false", SESSION_COOKIE_SECURE="false", SECURE_HSTS_SECONDS="0"
    )

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    for check_id in ("security.W004", "security.W008", "security.W012"):
        assert check_id in output


def test_it_is_strict_by_default_when_debug_is_off() -> None:
    env = production_env()
    del env["SECURE_PROXY_SSL_HEADER"]

    values = production_settings(
        env,
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SESSION_COOKIE_HTTPONLY",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_CONTENT_TYPE_NOSNIFF",
        "X_FRAME_OPTIONS",
        "SECURE_PROXY_SSL_HEADER",
        "CACHES",
    )

    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SESSION_COOKIE_HTTPONLY"] is True
    assert values["SECURE_HSTS_SECONDS"] >= 31_536_000
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert values["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    assert values["X_FRAME_OPTIONS"] == "DENY"
    # Trusting X-Forwarded-Proto is opt-in: without a proxy that sets it, anyone could.
    assert values["SECURE_PROXY_SSL_HEADER"] is None
    # Login rate limits live in a cache every worker and host shares.
    assert values["CACHES"]["default"]["BACKEND"] == "django.core.cache.backends.db.DatabaseCache"


def test_it_shares_rate_limits_through_redis_when_redis_url_is_set() -> None:
    values = production_settings(
        production_env(REDIS_URL="redis://cache.internal:6379/0"), "CACHES"
    )

    assert values["CACHES"]["default"] == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://cache.internal:6379/0",
    }


def test_it_configures_postgres_for_a_transaction_pooler_from_the_environment() -> None:
    env = production_env(
        DATABASE_URL="postgres://app:s%40cret@ep-x-pooler.neon.tech:5432/comfy?sslmode=require",
        DB_DISABLE_SERVER_SIDE_CURSORS="true",
        DB_POOL="true",
        DB_POOL_MIN_SIZE="2",
        DB_POOL_MAX_SIZE="6",
    )

    database = production_settings(env, "DATABASES")["DATABASES"]["default"]

    assert database["PASSWORD"] == "s@cret"
    assert database["OPTIONS"]["sslmode"] == "require"
    assert database["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 6, "timeout": 10}
    assert database["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert database["CONN_HEALTH_CHECKS"] is True
    # A pool and persistent connections are mutually exclusive.
    assert database["CONN_MAX_AGE"] == 0
