"""Comfy Credits settings: one file, every knob from the environment (see .env.example)."""

import logging
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP
from django.utils.translation import gettext_lazy as _

from config.env import (
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_str,
    parse_database_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
TESTING = "pytest" in sys.modules or (len(sys.argv) > 1 and sys.argv[1] == "test")

# --- Core -------------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG and not TESTING:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when DEBUG is off. Generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    # A fresh key per process is fine for development: sessions just do not survive restarts.
    SECRET_KEY = secrets.token_urlsafe(50)
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list(
    "CSRF_TRUSTED_ORIGINS", ["http://localhost:8000", "http://127.0.0.1:8000"]
)
APP_URL = env_str("APP_URL", "http://localhost:8000").rstrip("/")
if urlsplit(APP_URL).scheme not in ("http", "https"):
    raise ImproperlyConfigured(f"APP_URL={APP_URL!r} must start with http:// or https://.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "django_htmx",
    "django_tasks_db",
    "accounts",
    "credits",
    "workflows",
    "generations",
    "payments",
    "apikeys",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "credits.context_processors.balance",
            ],
        },
    }
]

# --- Database ---------------------------------------------------------------------------------
DATABASES = {
    "default": parse_database_url(
        env_str("DATABASE_URL", "sqlite:///db.sqlite3"), base_dir=BASE_DIR
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DB_POOL = env_bool("DB_POOL", False)
    DATABASES["default"].update(
        {
            # A pool and persistent connections are mutually exclusive in Django.
            "CONN_MAX_AGE": 0 if DB_POOL else env_int("DB_CONN_MAX_AGE", 60, minimum=0),
            "CONN_HEALTH_CHECKS": env_bool("DB_CONN_HEALTH_CHECKS", True),
            # Behind a transaction-mode pooler (Neon's -pooler host, PgBouncer) named
            # server-side cursors break; turn them off there.
            "DISABLE_SERVER_SIDE_CURSORS": env_bool("DB_DISABLE_SERVER_SIDE_CURSORS", False),
        }
    )
    if DB_POOL:
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": env_int("DB_POOL_MIN_SIZE", 1, minimum=0),
            "max_size": env_int("DB_POOL_MAX_SIZE", 4, minimum=1),
            "timeout": env_int("DB_POOL_TIMEOUT", 10, minimum=1),
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (allauth rate limits must be shared by every worker and host) ----------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "django_cache",
        }
    }

# --- Background tasks (django.tasks through django-tasks-db) ---------------------------------
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# --- Auth and accounts ------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard"
ACCOUNT_LOGOUT_REDIRECT_URL = "landing"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env_choice(
    "ACCOUNT_EMAIL_VERIFICATION", "optional", {"none", "optional", "mandatory"}
)
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_SESSION_REMEMBER = None
ACCOUNT_RATE_LIMITS_ENABLED = env_bool("ACCOUNT_RATE_LIMITS_ENABLED", True)
if not ACCOUNT_RATE_LIMITS_ENABLED:
    ACCOUNT_RATE_LIMITS = False
# Behind a proxy every request seems to come from the proxy, which would make the per-IP login
# limits global: take the client address from X-Forwarded-For (counting the proxies you run) or
# from a header your proxy sets (CF-Connecting-IP, Fly-Client-IP, X-Real-IP …).
ALLAUTH_TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)
ALLAUTH_TRUSTED_CLIENT_IP_HEADER = env_str("TRUSTED_CLIENT_IP_HEADER") or None

# --- Product knobs ----------------------------------------------------------------------------
SIGNUP_BONUS_CREDITS = env_int("SIGNUP_BONUS_CREDITS", 5, minimum=0, maximum=1_000_000)
MAX_CONCURRENT_RUNS = env_int("MAX_CONCURRENT_RUNS", 2, minimum=1, maximum=100)
RUN_STALE_AFTER_SECONDS = env_int("RUN_STALE_AFTER_SECONDS", 60, minimum=1)
RUN_TIMEOUT_SECONDS = env_int("RUN_TIMEOUT_SECONDS", 1800, minimum=10)
# A polled generation (browser or API) not heard from for this long is re-fetched upstream, so
# runs complete even where ComfyDeploy's webhooks cannot reach the app (a laptop).
POLL_REFRESH_AFTER_SECONDS = env_int("POLL_REFRESH_AFTER_SECONDS", 10, minimum=1)
# How often the background watchdog task runs its reconcile pass.
WATCHDOG_INTERVAL_SECONDS = env_int("WATCHDOG_INTERVAL_SECONDS", 30, minimum=5)
# Largest single staff adjustment, in credits (a typo of extra zeros must not mint a fortune).
MAX_ADJUSTMENT_CREDITS = env_int("MAX_ADJUSTMENT_CREDITS", 1_000_000, minimum=1)

COMFY_DEPLOY_API_KEY = env_str("COMFY_DEPLOY_API_KEY")
COMFY_DEPLOY_API_URL = env_str("COMFY_DEPLOY_API_URL", "https://api.comfydeploy.com/api").rstrip(
    "/"
)
COMFY_DEPLOY_CONNECT_TIMEOUT = env_int("COMFY_DEPLOY_CONNECT_TIMEOUT", 5, minimum=1)
# The queue POST waits for dispatch to a GPU backend and can take several seconds.
COMFY_DEPLOY_READ_TIMEOUT = env_int("COMFY_DEPLOY_READ_TIMEOUT", 30, minimum=1)
# Where `manage.py simulator` listens when no COMFY_DEPLOY_API_KEY is set.
SIMULATOR_PORT = env_int("SIMULATOR_PORT", 8188, minimum=1, maximum=65535)
SIMULATOR_URL = env_str("SIMULATOR_URL")

# --- Payments (Stripe Checkout) --------------------------------------------------------------
# STRIPE_SECRET_KEY      sk_live_… / sk_test_… (or a restricted rk_… key able to create Checkout Sessions)
# STRIPE_WEBHOOK_SECRET  whsec_… of the endpoint {APP_URL}/webhooks/stripe/
#                        Both set → packages get a Buy button; both empty → packages say how to buy by
#                        hand. Only one of them set would take money without crediting it: refused.
# STRIPE_API_BASE        default https://api.stripe.com; tests point it at a local HTTP fake
# STRIPE_WEBHOOK_TOLERANCE  seconds a signed event stays acceptable (replay window), default 300
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
if bool(STRIPE_SECRET_KEY) != bool(STRIPE_WEBHOOK_SECRET):
    raise ImproperlyConfigured(
        "Set both STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET (to sell packages with Stripe) "
        "or neither (to sell them by hand)."
    )
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "https://api.stripe.com").rstrip("/")
if urlsplit(STRIPE_API_BASE).scheme not in ("http", "https"):
    raise ImproperlyConfigured(
        f"STRIPE_API_BASE={STRIPE_API_BASE!r} must start with https:// (or http://)."
    )
STRIPE_WEBHOOK_TOLERANCE = env_int("STRIPE_WEBHOOK_TOLERANCE", 300, minimum=1, maximum=86_400)

ADMIN_EMAIL = env_str("ADMIN_EMAIL")
ADMIN_PASSWORD = env_str("ADMIN_PASSWORD")

# --- Internationalisation ---------------------------------------------------------------------
LANGUAGE_CODE = env_choice("LANGUAGE_CODE", "es", {"es", "en"})
LANGUAGES = [("es", _("Spanish")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_TZ = True

# --- Static and media files -------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env_bool("STATIC_MANIFEST", not DEBUG and not TESTING)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# Generation outputs are copied here (upstream URLs expire after an hour). Local media by default,
# served only to each image's owner by a login-protected view; S3-compatible storage when a bucket
# is configured (credentials may also come from the environment or an instance role).
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
if AWS_STORAGE_BUCKET_NAME:
    AWS_S3_CUSTOM_DOMAIN = env_str("AWS_S3_CUSTOM_DOMAIN")
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
            "access_key": env_str("AWS_ACCESS_KEY_ID") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY") or None,
            "region_name": env_str("AWS_S3_REGION_NAME") or None,
            "custom_domain": AWS_S3_CUSTOM_DOMAIN or None,
            # A private bucket gets pre-signed URLs; a custom domain (CDN) is taken as public.
            "querystring_auth": not AWS_S3_CUSTOM_DOMAIN,
            "querystring_expire": env_int("AWS_QUERYSTRING_EXPIRE", 3600, minimum=60),
            "signature_version": "s3v4",
            "default_acl": None,
            "file_overwrite": True,
        },
    }
# Largest single output we copy; anything bigger is refused (and keeps its upstream URL).
OUTPUT_MAX_BYTES = env_int("OUTPUT_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)

# --- Email ------------------------------------------------------------------------------------
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Comfy Credits <no-reply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
if env_str("EMAIL_HOST"):
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": env_str("EMAIL_HOST"),
                "port": env_int("EMAIL_PORT", 587, minimum=1, maximum=65535),
                "username": env_str("EMAIL_HOST_USER"),
                "password": env_str("EMAIL_HOST_PASSWORD"),
                "use_tls": env_bool("EMAIL_USE_TLS", True),
            },
        }
    }
else:
    # No SMTP configured: emails (verification, password reset) are printed to the console.
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}

# --- Security ---------------------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("SECURE_PROXY_SSL_HEADER", False) else None
)
# Production defaults are strict; plain-HTTP development and the test suite turn them off.
_STRICT = not DEBUG and not TESTING
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _STRICT)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", _STRICT)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", _STRICT)
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if _STRICT else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Webhook bodies are small JSON documents; anything larger is refused before parsing.
WEBHOOK_MAX_BODY_BYTES = env_int("WEBHOOK_MAX_BODY_BYTES", 256 * 1024, minimum=1024)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# Images may come from ComfyDeploy's buckets (https) or, with the simulator, from loopback.
_IMG_SOURCES = [CSP.SELF, "data:", "https:"]
if not COMFY_DEPLOY_API_KEY or COMFY_DEPLOY_API_URL.startswith("http:"):
    _IMG_SOURCES.append(
        _origin(COMFY_DEPLOY_API_URL) if COMFY_DEPLOY_API_KEY else "http://127.0.0.1:*"
    )
    _IMG_SOURCES.append("http://localhost:*")
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
    "img-src": _IMG_SOURCES,
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF, "https:"],
}

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "info", {"debug", "info", "warning", "error"}).upper()
LOG_FORMAT = env_choice("LOG_FORMAT", "text" if DEBUG else "json", {"text", "json"})
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "config.logging.JsonFormatter"},
        "text": {"()": "config.logging.TextFormatter"},
    },
    "filters": {
        "context": {"()": "config.logging.LogContextFilter"},
        "redact": {"()": "config.logging.RedactSecretsFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context", "redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "httpx": {"level": "WARNING"},
        # Scanners hitting unknown Host headers are not errors worth a traceback each.
        "django.security.DisallowedHost": {"level": "CRITICAL"},
        "httpcore": {"level": "WARNING"},
        "stripe": {"level": "WARNING"},  # the library logs every API call at INFO
    },
}
if not TESTING:
    # Python warnings go through logging too, so production output stays one JSON object per line
    # (pytest keeps its own warning capture).
    logging.captureWarnings(True)
