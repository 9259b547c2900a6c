"""Gunicorn settings, every knob from the environment: ``gunicorn -c config/gunicorn.py config.wsgi``.

Sizing rule (see the README, "Deploy to production"): Django keeps one database connection per
thread, and a psycopg pool (``DB_POOL=true``) is shared by the threads of one worker process, so
per replica ``WEB_CONCURRENCY x GUNICORN_THREADS`` connections (pooled:
``WEB_CONCURRENCY x DB_POOL_MAX_SIZE``) plus one for the background worker, summed over replicas,
must stay below the database's ``max_connections``.

Variables (all optional):
    PORT                         listen port on 0.0.0.0 (8000); GUNICORN_BIND overrides the whole
                                 address (e.g. ``unix:/run/app.sock``)
    WEB_CONCURRENCY              worker processes (2)
    GUNICORN_THREADS             threads per worker, gthread worker class (4)
    GUNICORN_TIMEOUT             seconds a worker may stay silent before it is killed (60); above
                                 COMFY_DEPLOY_CONNECT_TIMEOUT + COMFY_DEPLOY_READ_TIMEOUT
    GUNICORN_GRACEFUL_TIMEOUT    seconds in-flight requests get to finish on SIGTERM (30)
    GUNICORN_KEEPALIVE           seconds an idle keep-alive connection stays open (5); keep it
                                 below the load balancer's idle timeout
    GUNICORN_MAX_REQUESTS        recycle a worker after this many requests, 0 = never (1000)
    GUNICORN_MAX_REQUESTS_JITTER random extra requests so workers do not all recycle at once (100)
    FORWARDED_ALLOW_IPS          proxies trusted for X-Forwarded-* (read by gunicorn itself)
    LOG_FORMAT, LOG_LEVEL, DEBUG the same as the Django settings: JSON lines unless DEBUG
"""

import logging
import os
import sys
from pathlib import Path

# The config file is exec'd by gunicorn; make the project importable wherever it was started.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gunicorn.glogging import Logger

from config.env import env_bool, env_choice, env_int, env_str
from config.logging import JsonFormatter, RedactSecretsFilter, redact_secrets

_DEBUG = env_bool("DEBUG", False)
_LOG_FORMAT = env_choice("LOG_FORMAT", "text" if _DEBUG else "json", {"text", "json"})

bind = [env_str("GUNICORN_BIND") or f"0.0.0.0:{env_int('PORT', 8000, minimum=1, maximum=65535)}"]
workers = env_int("WEB_CONCURRENCY", 2, minimum=1, maximum=64)
threads = env_int("GUNICORN_THREADS", 4, minimum=1, maximum=64)
# gthread: a request waiting on ComfyDeploy (up to the read timeout) blocks one thread, not the
# worker, and the worker keeps heart-beating so it is not killed while it waits.
worker_class = "gthread"
timeout = env_int("GUNICORN_TIMEOUT", 60, minimum=5)
graceful_timeout = env_int("GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=1)
keepalive = env_int("GUNICORN_KEEPALIVE", 5, minimum=1)
max_requests = env_int("GUNICORN_MAX_REQUESTS", 1000, minimum=0)
max_requests_jitter = env_int("GUNICORN_MAX_REQUESTS_JITTER", 100, minimum=0)
# Heartbeat files on tmpfs: a container's overlay disk can stall them and get workers killed.
if Path("/dev/shm").is_dir():  # noqa: S108 - a path check, not a temporary file
    worker_tmp_dir = "/dev/shm"  # noqa: S108
# Oversized request lines and headers are refused before they reach Django.
limit_request_line = 8190
limit_request_fields = 100
accesslog = "-"
errorlog = "-"
loglevel = env_choice("LOG_LEVEL", "info", {"debug", "info", "warning", "error"})
proc_name = "comfy-credits"


class JsonLogger(Logger):
    """Gunicorn's logger writing JSON lines: one object per request with named fields (parsed by
    log platforms without a regex), and gunicorn's own messages in the app's JSON format."""

    def setup(self, cfg: object) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())
                handler.addFilter(RedactSecretsFilter())

    def access(self, resp: object, req: object, environ: dict, request_time: object) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        duration = request_time.seconds * 1000 + request_time.microseconds / 1000
        fields = {
            "remote_addr": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD", ""),
            "path": redact_secrets(environ.get("PATH_INFO", "")),
            "query_length": len(environ.get("QUERY_STRING", "")),
            "status": int(status) if str(status).isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(duration, 1),
            "user_agent": environ.get("HTTP_USER_AGENT", "")[:300],
            "request_id": environ.get("HTTP_X_REQUEST_ID", "")[:100],
            "pid": os.getpid(),  # which worker answered
        }
        try:
            self.access_log.info(
                "%s %s %s", fields["method"], fields["path"], fields["status"], extra=fields
            )
        except Exception:  # a log line must never break a response
            self.error("access log failed")


class TextLogger(Logger):
    """Gunicorn's own format, with the secret path segments redacted."""

    def setup(self, cfg: object) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.addFilter(RedactSecretsFilter())

    def atoms(self, resp: object, req: object, environ: dict, request_time: object) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        path = redact_secrets(environ.get("PATH_INFO", ""))
        atoms["U"] = path
        atoms["r"] = f"{environ.get('REQUEST_METHOD')} {path} {environ.get('SERVER_PROTOCOL')}"
        return atoms


logger_class = JsonLogger if _LOG_FORMAT == "json" else TextLogger
if _LOG_FORMAT == "text":
    access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


def when_ready(server: object) -> None:
    server.log.info(
        "listening",
        extra={
            "workers": workers,
            "threads": threads,
            "worker_class": worker_class,
            "pid": os.getpid(),
        },
    )


def worker_abort(worker: object) -> None:
    # SIGABRT after GUNICORN_TIMEOUT: say so in one parsable line before the worker dies.
    logging.getLogger("gunicorn.error").error(
        "worker timed out", extra={"pid": worker.pid, "timeout": timeout}
    )
