"""PostgreSQL as production runs it: the psycopg pool (DB_POOL=true), libpq options from the URL
(how Neon's ``sslmode=require`` arrives) and server-side cursors off for transaction poolers.

Each case is a real process with its own environment against the local PostgreSQL test database.
"""

import json
import subprocess
import sys

import pytest
from django.conf import settings

from tests.test_production_settings import ROOT, production_env

# Runs inside the subprocess: eight threads share a pool of at most three connections.
POOL_PROBE = """
import json, threading
from django.db import connection, connections
from accounts.models import User

results = []

def work():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), current_setting('application_name')")
        results.append(cursor.fetchone())
    list(User.objects.order_by("pk").iterator(chunk_size=2))
    connections.close_all()  # gives the connection back to the pool

threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join(30)
pool = connection.pool
print(json.dumps({
    "pool": type(pool).__name__ if pool else None,
    "max_size": pool.max_size if pool else None,
    "answers": len(results),
    "backends": len({pid for pid, _ in results}),
    "application_names": sorted({name for _, name in results}),
    "server_side_cursors_disabled": connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"],
}))
"""


def _database_url(**params: str) -> str:
    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return (
        f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}?{query}"
    )


def _probe(env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", POOL_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.django_db
def test_it_serves_many_threads_from_a_bounded_connection_pool() -> None:
    env = production_env(
        DATABASE_URL=_database_url(sslmode="disable", application_name="comfy-pool-test"),
        DB_POOL="true",
        DB_POOL_MIN_SIZE="1",
        DB_POOL_MAX_SIZE="3",
        DB_DISABLE_SERVER_SIDE_CURSORS="true",
    )

    probe = _probe(env)

    assert probe["pool"] == "ConnectionPool"
    assert probe["max_size"] == 3
    assert probe["answers"] == 8  # every thread got a connection and an answer
    assert 1 <= probe["backends"] <= 3  # never more server connections than the pool allows
    # Query parameters of DATABASE_URL reach libpq (that is how sslmode=require gets there).
    assert probe["application_names"] == ["comfy-pool-test"]
    assert probe["server_side_cursors_disabled"] is True


@pytest.mark.django_db
def test_it_uses_one_persistent_connection_per_thread_without_the_pool() -> None:
    env = production_env(DATABASE_URL=_database_url(sslmode="disable"), DB_POOL="false")

    probe = _probe(env)

    assert probe["pool"] is None
    assert probe["answers"] == 8
