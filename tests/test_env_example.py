"""`.env.example` documents every variable the app reads: operators configure from it."""

import re
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
READERS = re.compile(r"""env_(?:str|bool|int|list|choice)\(\s*["']([A-Z0-9_]+)["']""")


def _documented() -> set[str]:
    text = (BASE_DIR / ".env.example").read_text()
    return set(re.findall(r"^([A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_it_documents_every_variable_the_settings_and_gunicorn_read() -> None:
    read = set()
    for path in ("config/settings.py", "config/gunicorn.py"):
        read |= set(READERS.findall((BASE_DIR / path).read_text()))
    assert read, "the readers pattern no longer matches config/settings.py"
    assert read - _documented() == set()


def test_it_documents_the_contract_variables_of_the_design() -> None:
    contract = {
        "DATABASE_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "APP_URL",
        "COMFY_DEPLOY_API_KEY", "COMFY_DEPLOY_API_URL", "SIGNUP_BONUS_CREDITS",
        "MAX_CONCURRENT_RUNS", "RUN_STALE_AFTER_SECONDS", "RUN_TIMEOUT_SECONDS",
        "ACCOUNT_EMAIL_VERIFICATION", "LANGUAGE_CODE", "ADMIN_EMAIL", "ADMIN_PASSWORD",
    }  # fmt: skip
    assert contract - _documented() == set()
