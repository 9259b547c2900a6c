#!/bin/sh
# Container entry point. One image, three roles, picked by the first argument:
#   web      gunicorn with config/gunicorn.py (the default)
#   worker   the background task worker (output downloads, the periodic watchdog)
#   release  database migrations; run once per deploy, before the new web/worker start
# Anything else runs as given (e.g. `python manage.py createsuperuser`).
set -eu

case "${1:-web}" in
    web)
        exec gunicorn --config /app/config/gunicorn.py config.wsgi
        ;;
    worker)
        # The watchdog re-enqueues itself after every pass; make sure one is waiting.
        python manage.py reconcile_generations --schedule
        exec python manage.py db_worker --queue-name '*' --interval "${WORKER_POLL_INTERVAL:-1}" --no-reload
        ;;
    release)
        exec python manage.py migrate --noinput
        ;;
    manage)
        shift
        exec python manage.py "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
