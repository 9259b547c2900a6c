# Comfy Credits — the two commands: `make run` (the app, embedded defaults) and `make test`.
SHELL := /bin/bash
PYTHON := $(shell scripts/find-python)
UV_PY := $(if $(PYTHON),--python $(PYTHON),)
RUN := uv run --frozen $(UV_PY)
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/comfy_credits
PORT ?= 8000

.PHONY: help install run test test-fast e2e lint format check bench messages

help:
	@echo "make run      run the app on http://localhost:$(PORT) (SQLite + built-in ComfyDeploy simulator)"
	@echo "make test     run the whole test suite (PostgreSQL at $(TEST_DATABASE_URL), Chromium for e2e)"
	@echo "make lint     ruff check + format check + migrations check"
	@echo "make bench    the benchmark harness (see bench/README.md)"

install:
	uv sync --frozen $(UV_PY)

# Migrate, seed, then run the simulator (when COMFY_DEPLOY_API_KEY is empty), the background
# worker (watchdog, output downloads) and the development server; Ctrl-C stops them all.
# One SECRET_KEY for all of them (settings would pick a random one per process), so webhook
# tokens and sessions stay valid across the processes and the server's auto-reloads.
run: install
	@export DEBUG=$${DEBUG:-true} APP_URL=$${APP_URL:-http://localhost:$(PORT)}; set -e; \
	export SECRET_KEY=$${SECRET_KEY:-$$(openssl rand -base64 48 2>/dev/null || date +%s%N | sha256sum)}; \
	$(RUN) python manage.py migrate --noinput; \
	$(RUN) python manage.py seed; \
	$(RUN) python manage.py reconcile_generations --schedule; \
	trap 'kill 0' EXIT INT TERM; \
	if [ -z "$$COMFY_DEPLOY_API_KEY" ]; then $(RUN) python manage.py simulator & fi; \
	$(RUN) python manage.py db_worker --interval 1 & \
	$(RUN) python manage.py runserver $(PORT)

test: install
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(RUN) pytest $(ARGS)

# Everything but the browser tests.
test-fast: install
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(RUN) pytest -m "not e2e" $(ARGS)

e2e: install
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(RUN) pytest -m e2e $(ARGS)

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	DEBUG=true $(RUN) python manage.py makemigrations --check --dry-run

format: install
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

messages: install
	DEBUG=true $(RUN) python manage.py makemessages -l es -l en --ignore=.venv --ignore=staticfiles --ignore=bench
	DEBUG=true $(RUN) python manage.py compilemessages --ignore=.venv

bench: install
	$(RUN) python bench/run.py $(ARGS)
