"""Settings come from the environment, strictly: a malformed value stops start-up with a message
naming the variable (a typo must never silently become a default), and DATABASE_URL picks the
database (SQLite with IMMEDIATE transactions when unset; PostgreSQL incl. Neon's sslmode)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_choice, env_int, env_list, parse_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
PRINT_SETTINGS = (
    "import json, config.settings as s; "
    "print(json.dumps({'db': s.DATABASES['default'], 'debug': s.DEBUG, "
    "'max_runs': s.MAX_CONCURRENT_RUNS, 'bonus': s.SIGNUP_BONUS_CREDITS}))"
)


def _start(
    env: dict[str, str], code: str = "import config.settings"
) -> subprocess.CompletedProcess:
    """Import the settings in a fresh process with only the given configuration."""
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _settings(env: dict[str, str]) -> dict:
    started = _start({"SECRET_KEY": "test-only-secret", **env}, PRINT_SETTINGS)
    assert started.returncode == 0, started.stderr
    return json.loads(started.stdout)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "ture"),
        ("DEBUG", "2"),
        ("MAX_CONCURRENT_RUNS", "abc"),
        ("MAX_CONCURRENT_RUNS", "0"),
        ("MAX_CONCURRENT_RUNS", "2.5"),
        ("SIGNUP_BONUS_CREDITS", "five"),
        ("SIGNUP_BONUS_CREDITS", "-1"),
        ("RUN_STALE_AFTER_SECONDS", "1m"),
        ("RUN_TIMEOUT_SECONDS", "0"),
        ("MAX_ADJUSTMENT_CREDITS", "lots"),
        ("ACCOUNT_EMAIL_VERIFICATION", "sometimes"),
        ("ACCOUNT_RATE_LIMITS_ENABLED", "nope"),
        ("LANGUAGE_CODE", "fr"),
        ("APP_URL", "ftp://example.com"),
        ("DATABASE_URL", "mysql://user:secret@db.example.com/comfy"),
        ("DATABASE_URL", "postgres://user:secret@db.example.com"),
        ("DATABASE_URL", "postgres://user:secret@db.example.com:port/comfy"),
        ("DATABASE_URL", "sqlite://"),
        ("DATABASE_URL", "not a url"),
    ],
)
def test_it_refuses_to_start_with_a_malformed_variable(name: str, value: str) -> None:
    started = _start({"SECRET_KEY": "test-only-secret", name: value})

    assert started.returncode != 0
    message = started.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured" in message
    assert name in message


def test_it_refuses_to_start_without_a_secret_key_when_debug_is_off() -> None:
    started = _start({"DEBUG": "false"})

    assert started.returncode != 0
    assert "SECRET_KEY is required" in started.stderr


def test_it_starts_with_the_embedded_defaults() -> None:
    configured = _settings({})

    assert configured["debug"] is False
    assert configured["max_runs"] == 2
    assert configured["bonus"] == 5
    assert configured["db"]["ENGINE"] == "django.db.backends.sqlite3"
    assert configured["db"]["NAME"] == str(BASE_DIR / "db.sqlite3")
    assert configured["db"]["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_it_starts_in_debug_without_a_secret_key() -> None:
    started = _start({"DEBUG": "yes"}, PRINT_SETTINGS)

    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["debug"] is True


def test_it_reads_a_neon_postgres_url_with_sslmode() -> None:
    configured = _settings(
        {
            "DATABASE_URL": "postgres://u:p@ep-cool-123.eu-central-1.aws.neon.tech/db?sslmode=require",
            "MAX_CONCURRENT_RUNS": "4",
            "SIGNUP_BONUS_CREDITS": "0",
        }
    )

    db = configured["db"]
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"]) == ("db", "u", "p")
    assert db["HOST"] == "ep-cool-123.eu-central-1.aws.neon.tech"
    assert db["OPTIONS"] == {"sslmode": "require"}
    assert (configured["max_runs"], configured["bonus"]) == (4, 0)


def test_it_parses_every_part_of_a_postgres_url() -> None:
    db = parse_database_url(
        "postgresql://app%40prod:p%2Fss%3Aword@db.internal:6543/comfy%20credits"
        "?sslmode=verify-full&channel_binding=require",
        base_dir=BASE_DIR,
    )

    assert db["USER"] == "app@prod"
    assert db["PASSWORD"] == "p/ss:word"
    assert (db["HOST"], db["PORT"], db["NAME"]) == ("db.internal", "6543", "comfy credits")
    assert db["OPTIONS"] == {"sslmode": "verify-full", "channel_binding": "require"}


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("sqlite:///db.sqlite3", str(BASE_DIR / "db.sqlite3")),
        ("sqlite:///data/app.sqlite3", str(BASE_DIR / "data" / "app.sqlite3")),
        ("sqlite:////var/lib/comfy/app.sqlite3", "/var/lib/comfy/app.sqlite3"),
    ],
)
def test_it_reads_a_sqlite_url_with_immediate_transactions(url: str, name: str) -> None:
    db = parse_database_url(url, base_dir=BASE_DIR)

    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == name
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_it_reads_booleans_integers_lists_and_choices(monkeypatch) -> None:
    for value, expected in [
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("Off", False),
    ]:
        monkeypatch.setenv("FLAG", value)
        assert env_bool("FLAG", not expected) is expected
    monkeypatch.setenv("FLAG", "   ")
    assert env_bool("FLAG", True) is True  # blank means unset
    monkeypatch.setenv("COUNT", " 7 ")
    assert env_int("COUNT", 1, minimum=1, maximum=10) == 7
    monkeypatch.setenv("HOSTS", "a.example.com, b.example.com,,")
    assert env_list("HOSTS", []) == ["a.example.com", "b.example.com"]
    monkeypatch.setenv("LANG_PICK", "EN")
    assert env_choice("LANG_PICK", "es", {"es", "en"}) == "en"


def test_it_names_the_variable_and_the_bound_when_an_integer_is_out_of_range(monkeypatch) -> None:
    monkeypatch.setenv("COUNT", "11")
    with pytest.raises(ImproperlyConfigured, match=r"COUNT=11 is above the maximum of 10"):
        env_int("COUNT", 1, minimum=1, maximum=10)
    monkeypatch.setenv("COUNT", "0")
    with pytest.raises(ImproperlyConfigured, match=r"COUNT=0 is below the minimum of 1"):
        env_int("COUNT", 1, minimum=1, maximum=10)
