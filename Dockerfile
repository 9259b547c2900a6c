# syntax=docker/dockerfile:1
# Comfy Credits production image: gunicorn (gthread) as a non-root user, static files baked in.
#   docker build -t comfy-credits .
#   docker run --env-file .env comfy-credits release   # migrations (run once per deploy)
#   docker run --env-file .env -p 8000:8000 comfy-credits   # web (default)
#   docker run --env-file .env comfy-credits worker    # background tasks + watchdog
ARG PYTHON_VERSION=3.13
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# --- builder: the locked dependencies in /opt/venv, the app with its static files in /app ---------
FROM python:${PYTHON_VERSION}-slim AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /app
# Dependencies first (their own layer, rebuilt only when the lock changes); --frozen fails the
# build if uv.lock is out of date instead of resolving something untested.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project
COPY . .
# Translations: compiled here when the .po files are not shipped compiled.
RUN if find . -path ./.venv -prune -o -name '*.po' -print | grep -q . \
        && ! find . -path ./.venv -prune -o -name '*.mo' -print | grep -q .; then \
        apt-get update -qq && apt-get install -y -qq --no-install-recommends gettext >/dev/null \
        && DEBUG=true /opt/venv/bin/python manage.py compilemessages --ignore=.venv; \
    fi
# collectstatic needs settings that load, not secrets: a throwaway key, no database.
RUN DEBUG=false \
    SECRET_KEY=collectstatic-only-not-a-secret \
    DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    STATIC_MANIFEST=true \
    /opt/venv/bin/python manage.py collectstatic --noinput --verbosity 0 \
    && rm -f /tmp/build.sqlite3 \
    && /opt/venv/bin/python -m compileall -q -j 0 /app

# --- runtime ---------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    DJANGO_SETTINGS_MODULE=config.settings \
    PORT=8000 \
    MEDIA_ROOT=/app/media
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
# Code and static files stay owned by root (read-only for the app user); only media is writable.
COPY --from=builder /app /app
RUN mkdir -p /app/media && chown app:app /app/media \
    && chmod 0755 /app/docker/entrypoint.sh /app/docker/healthcheck.py
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["web"]
