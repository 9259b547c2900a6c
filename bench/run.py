"""The benchmark: ``make bench`` (or ``uv run python bench/run.py [--seconds 10] …``).

One command, everything on loopback, everything stopped and cleaned up at the end (also on Ctrl-C
or an error). It

1. creates a fresh PostgreSQL database (``comfy_bench``) and migrates it;
2. starts the ComfyDeploy simulator in instant-success mode (``manage.py simulator --instant``);
3. creates the data in-process through the ORM, ledger-consistent (every balance is the sum of its
   entries): N users with credits and sessions, one "hot" user, one user with 1,000 generations,
   queued generations for the webhook phase, and users for pgbench;
4. starts the app under gunicorn with the production config (``config/gunicorn.py``: gthread),
   ``DEBUG=false`` and ``DJANGO_SETTINGS_MODULE=bench.settings`` (the app plus ``/bench/trivial``);
5. runs each load phase for ``--seconds`` from a separate process (``bench/load.py``, asyncio),
   and pgbench with ``bench/charge.sql``, sampling the CPU time of every process involved;
6. counts queries per request in-process (the Django test client against the same database),
   reads each gunicorn worker's peak RSS, runs ``check_ledger`` and other money checks;
7. prints the table (Markdown), and with ``--json PATH`` saves every number.

See bench/README.md for how to read it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKFLOW = "text-to-image"  # created by `manage.py seed`, cost 2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- Command line ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the app under gunicorn against its physical limits."
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds per phase")
    parser.add_argument(
        "--users", type=int, default=1000, help="users the generate load spreads over"
    )
    parser.add_argument(
        "--clients", default="8,32,64", help="concurrent clients for generate and trivial"
    )
    parser.add_argument("--hot-clients", type=int, default=32, help="clients all on one user")
    parser.add_argument(
        "--hot-credits",
        type=int,
        default=100,
        help="the hot user's credits (cost 2): runs out mid-phase so 402 shows up beside 429",
    )
    parser.add_argument("--webhook-clients", type=int, default=32)
    parser.add_argument("--page-clients", default="8", help="concurrent clients for the pages")
    parser.add_argument("--page-generations", type=int, default=1000)
    parser.add_argument(
        "--webhook-generations",
        type=int,
        default=10000,
        help="queued generations prepared for the webhook phase (2 deliveries each)",
    )
    parser.add_argument(
        "--recycle",
        type=int,
        default=50,
        help="each client reconnects after this many requests (0: never), so connections "
        "spread over the gunicorn workers",
    )
    parser.add_argument("--pgbench-clients", type=int, default=0, help="default: workers x threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2 cores)")
    parser.add_argument("--threads", type=int, default=4, help="gthread threads per worker")
    parser.add_argument(
        "--max-requests",
        type=int,
        default=0,
        help="gunicorn max_requests (production recycles at 1000; 0 measures the steady state)",
    )
    parser.add_argument(
        "--db-pool", action="store_true", help="DB_POOL=true instead of CONN_MAX_AGE"
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432"),
        help="PostgreSQL server (trust auth), without a database name",
    )
    parser.add_argument(
        "--database", default="comfy_bench", help="scratch database (dropped first)"
    )
    parser.add_argument("--keep-db", action="store_true", help="leave the database for inspection")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated phases: trivial,generate,hot,webhook,pages,pgbench (default all)",
    )
    parser.add_argument(
        "--driver",
        choices=("raw", "httpx"),
        default="raw",
        help="the load driver's HTTP client (see bench/load.py)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra app environment for an experiment, e.g. --env DB_CONN_HEALTH_CHECKS=false",
    )
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    return parser.parse_args(argv)


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Child processes --------------------------------------------------------------------------------


class Children:
    """The processes this run started; each is its own process group so it can be stopped whole."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
        )
        log.close()
        self.started.append((name, process))
        return process

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop_all(self) -> None:
        for _name, process in reversed(self.started):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, process in reversed(self.started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # The group is the process and its own children (gunicorn's workers): kill stragglers.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --- /proc ----------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    # utime and stime are fields 14 and 15 of the whole line; here, after "pid (comm)", 12 and 13.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(part) for part in text.split()]


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def postgres_backends(database: str) -> list[int]:
    """PostgreSQL server processes serving the bench database (their titles name it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {database} " in title:
            pids.append(int(entry.name))
    return pids


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass
class CpuSample:
    """CPU seconds used during a phase, by whom."""

    processes: dict[str, list[int]]
    database: str
    start: dict[int, float] = field(default_factory=dict)
    start_machine: tuple[float, float] = (0.0, 0.0)
    start_wall: float = 0.0

    def begin(self) -> None:
        self.processes["postgres"] = postgres_backends(self.database)
        self.start = {
            pid: proc_cpu_seconds(pid) for pids in self.processes.values() for pid in pids
        }
        self.start_machine = machine_cpu()
        self.start_wall = time.monotonic()

    def end(self, extra: dict[str, float] | None = None) -> dict[str, float]:
        wall = time.monotonic() - self.start_wall
        busy, total = machine_cpu()
        used: dict[str, float] = {}
        # Backends opened during the phase (pgbench's) count from zero.
        self.processes["postgres"] = sorted(
            set(self.processes["postgres"]) | set(postgres_backends(self.database))
        )
        for name, pids in self.processes.items():
            used[name] = sum(max(0.0, proc_cpu_seconds(p) - self.start.get(p, 0.0)) for p in pids)
        used.update(extra or {})
        # Per gunicorn process: keep-alive connections stay with the worker that accepted them,
        # so an uneven split shows up here (one worker busy, the other idle).
        per_process = {
            str(p): max(0.0, proc_cpu_seconds(p) - self.start.get(p, 0.0))
            for p in self.processes.get("gunicorn", [])
        }
        machine_busy = busy - self.start_machine[0]
        cores = (total - self.start_machine[1]) / wall if wall else 0
        used["other"] = max(0.0, machine_busy - sum(used.values()))
        return {
            "wall_s": wall,
            "cores": cores,
            "machine_busy_s": machine_busy,
            "gunicorn_by_pid_s": per_process,
            **{f"{k}_s": v for k, v in used.items()},
        }


# --- The database and the environment ---------------------------------------------------------------


def db_recreate(server: str, database: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')


def db_drop(server: str, database: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def bench_env(
    args: argparse.Namespace, app_port: int, sim_port: int, media: Path
) -> dict[str, str]:
    app = f"http://127.0.0.1:{app_port}"
    env = {
        key: value
        for key, value in os.environ.items()
        # The bench is self-contained: none of the operator's app settings leak in.
        if not key.startswith(("COMFY_DEPLOY_", "STRIPE_", "AWS_", "REDIS_", "DB_", "GUNICORN_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DATABASE_URL": f"{args.server}/{args.database}",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
            "CSRF_TRUSTED_ORIGINS": app,
            "APP_URL": app,
            "COMFY_DEPLOY_API_KEY": "",
            "SIMULATOR_URL": f"http://127.0.0.1:{sim_port}/api",
            "SIMULATOR_PORT": str(sim_port),
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "SECURE_HSTS_SECONDS": "0",
            "STATIC_MANIFEST": "false",
            "LOG_LEVEL": "warning",
            "ACCOUNT_RATE_LIMITS_ENABLED": "false",
            "MAX_CONCURRENT_RUNS": "2",
            "MEDIA_ROOT": str(media),
            "GUNICORN_BIND": f"127.0.0.1:{app_port}",
            "WEB_CONCURRENCY": str(args.workers),
            "GUNICORN_THREADS": str(args.threads),
            "GUNICORN_MAX_REQUESTS": str(args.max_requests),
            "DB_POOL": "true" if args.db_pool else "false",
            "DB_POOL_MAX_SIZE": str(args.threads),
            "PYTHONUNBUFFERED": "1",
        }
    )
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants KEY=VALUE, not {item!r}")
        env[key] = value
    return env


def wait_http(
    url: str, seconds: float, process: subprocess.Popen, children: Children, name: str
) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited early:\n{children.log_tail(name)}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(
        f"{name} did not answer {url} within {seconds:.0f} s:\n{children.log_tail(name)}"
    )


# --- Data (in-process, after django.setup()) ------------------------------------------------------


@dataclass
class Fixtures:
    csrftoken: str
    load_sessions: list[str]
    hot_session: str
    hot_user_id: int
    pages_session: str
    pages_user_id: int
    webhooks: list[list[str]]
    pgbench_first: int
    pgbench_last: int
    pages_last_page: int
    probe_user_id: int


def _users(prefix: str, count: int, credits: int, reason: str) -> list[Any]:
    """``count`` users, each with one balance row and one ledger entry of ``credits``."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from credits.models import CreditBalance, LedgerEntry

    User = get_user_model()
    unusable = make_password(None)
    users = User.objects.bulk_create(
        [User(email=f"{prefix}{n}@bench.invalid", password=unusable) for n in range(count)],
        batch_size=2000,
    )
    CreditBalance.objects.bulk_create(
        [CreditBalance(user=u, balance=credits) for u in users], batch_size=2000
    )
    LedgerEntry.objects.bulk_create(
        [
            LedgerEntry(
                user=u,
                kind=LedgerEntry.Kind.ADMIN_ADJUSTMENT,
                amount=credits,
                balance_after=credits,
                reason=reason,
            )
            for u in users
        ],
        batch_size=2000,
    )
    return users


def _sessions(users: list[Any]) -> list[str]:
    """A signed-in session per user, as ``django.contrib.auth.login`` would store it."""
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    if settings.SESSION_ENGINE != "django.contrib.sessions.backends.db":
        raise SystemExit(
            f"bench/run.py writes database sessions; SESSION_ENGINE is {settings.SESSION_ENGINE}"
        )
    store = SessionStore()
    expires = timezone.now() + timedelta(days=1)
    rows, keys = [], []
    for user in users:
        key = secrets.token_hex(16)
        data = {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        rows.append(Session(session_key=key, session_data=store.encode(data), expire_date=expires))
        keys.append(key)
    Session.objects.bulk_create(rows, batch_size=2000)
    return keys


def _owned_generations(
    user: Any, workflow: Any, count: int, *, status: str, sim_origin: str
) -> list[Any]:
    """``count`` charged generations of ``user`` (who got exactly their cost first), ledger-consistent."""
    from django.utils import timezone

    from credits.models import CreditBalance, LedgerEntry
    from generations.models import Generation

    now = timezone.now()
    rows = []
    for n in range(count):
        run_id = str(uuid.uuid4())
        finished = status == "succeeded"
        rows.append(
            Generation(
                user=user,
                workflow=workflow,
                cost=workflow.cost,
                status=status,
                inputs={"prompt": f"bench picture {n}"},
                outputs=[
                    {
                        "url": f"{sim_origin}/files/{run_id}/0.png",
                        "type": "image",
                        "output_id": "output_images",
                    }
                ]
                if finished
                else [],
                progress=1.0 if finished else 0.0,
                run_id=run_id,
                queued_at=now,
                last_synced_at=now,
                finished_at=now if finished else None,
            )
        )
    generations = Generation.objects.bulk_create(rows, batch_size=2000)
    balance = CreditBalance.objects.get(user=user).balance
    entries = []
    for generation in generations:
        balance -= generation.cost
        entries.append(
            LedgerEntry(
                user=user,
                kind=LedgerEntry.Kind.GENERATION_CHARGE,
                amount=-generation.cost,
                balance_after=balance,
                reason=f"Generation with {workflow.name}",
                generation=generation,
            )
        )
    LedgerEntry.objects.bulk_create(entries, batch_size=2000)
    CreditBalance.objects.filter(user=user).update(balance=balance)
    return generations


def setup_data(args: argparse.Namespace, sim_origin: str) -> Fixtures:
    from django.core.management import call_command
    from django.db import transaction
    from django.middleware.csrf import _get_new_csrf_string

    from generations.services import webhook_url_for
    from generations.views import HISTORY_PAGE_SIZE
    from workflows.models import Workflow

    call_command("seed", stdout=io.StringIO(), stderr=io.StringIO())
    workflow = Workflow.objects.get(slug=WORKFLOW)
    cost = workflow.cost
    with transaction.atomic():
        load_users = _users("load", args.users, 1_000_000, "benchmark set-up")
        (hot,) = _users("hot", 1, args.hot_credits, "benchmark set-up")
        (pages,) = _users("pages", 1, cost * args.page_generations + 100, "benchmark set-up")
        (probe,) = _users("probe", 1, 1000, "benchmark set-up")
        _owned_generations(
            pages, workflow, args.page_generations, status="succeeded", sim_origin=sim_origin
        )
        per_owner = 100
        owners = _users(
            "hook", -(-args.webhook_generations // per_owner), cost * per_owner, "benchmark set-up"
        )
        webhooks: list[list[str]] = []
        for owner in owners:
            for generation in _owned_generations(
                owner, workflow, per_owner, status="queued", sim_origin=sim_origin
            ):
                webhooks.append(
                    [
                        webhook_url_for(generation),
                        generation.run_id,
                        f"{sim_origin}/files/{generation.run_id}/0.png",
                    ]
                )
        pg_users = _users("pgbench", 1000, 1_000_000, "benchmark set-up")
        load_sessions = _sessions(load_users)
        hot_session, pages_session = _sessions([hot, pages])
    ids = sorted(u.pk for u in pg_users)
    if ids[-1] - ids[0] + 1 != len(ids):
        raise SystemExit("pgbench users did not get contiguous ids")
    # Spread generations over owners: consecutive requests of a client hit different users.
    webhooks.sort(key=lambda item: item[1])
    return Fixtures(
        csrftoken=_get_new_csrf_string(),
        load_sessions=load_sessions,
        hot_session=hot_session,
        hot_user_id=hot.pk,
        pages_session=pages_session,
        pages_user_id=pages.pk,
        webhooks=webhooks,
        pgbench_first=ids[0],
        pgbench_last=ids[-1],
        pages_last_page=-(-args.page_generations // HISTORY_PAGE_SIZE),
        probe_user_id=probe.pk,
    )


# --- Phases -------------------------------------------------------------------------------------------


@dataclass
class Runner:
    args: argparse.Namespace
    children: Children
    env: dict[str, str]
    base: str
    tmp: Path
    processes: dict[str, list[int]]
    worker_pids: list[int]
    results: list[dict[str, Any]] = field(default_factory=list)

    def sampler(self) -> CpuSample:
        return CpuSample(
            processes={k: list(v) for k, v in self.processes.items()}, database=self.args.database
        )

    def load(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        spec = {
            "base": self.base,
            "seconds": self.args.seconds,
            "warmup": self.args.warmup,
            "driver": self.args.driver,
            "recycle": self.args.recycle,
            **spec,
        }
        path = self.tmp / f"spec-{name}.json"
        path.write_text(json.dumps(spec))
        cpu = self.sampler()
        driver = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "load.py"), str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C is ours to handle: we stop it below
        )
        try:
            # Sample around the counted part only: the driver says when its warm-up is over.
            marker = driver.stdout.readline() if driver.stdout else ""
            cpu.begin()
            if marker.strip() != "measuring":
                driver.wait(timeout=30)
            out, err = driver.communicate(timeout=self.args.seconds + self.args.warmup + 120)
        except BaseException:
            driver.kill()
            driver.wait()
            raise
        if driver.returncode != 0:
            raise SystemExit(f"load driver failed for {name}:\n{err[-3000:]}")
        result = json.loads(out)
        result["cpu"] = cpu.end({"driver": result["driver_cpu_s"]})
        result["worker_pids"] = self.worker_pids
        result["name"] = name
        self.results.append(result)
        print(
            f"  {name:<28} {result['rps']:8.0f} req/s  accepted {result['accepted_per_s']:7.0f}/s  "
            f"p95 {result['p95_ms']:6.1f} ms  errors {result['errors']}"
            + (f"  first error: {result['first_error'][:200]}" if result["errors"] else ""),
            flush=True,
        )
        return result

    def pgbench(self, fixtures: Fixtures) -> dict[str, Any]:
        binary = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
        clients = self.args.pgbench_clients or self.args.workers * self.args.threads
        command = [
            binary,
            "--no-vacuum",
            "--client",
            str(clients),
            "--jobs",
            str(min(clients, 2)),
            "--time",
            str(max(1, round(self.args.seconds))),
            "--file",
            str(ROOT / "bench" / "charge.sql"),
            "--define",
            f"first_user={fixtures.pgbench_first}",
            "--define",
            f"last_user={fixtures.pgbench_last}",
            "--report-per-command",
            f"{self.args.server}/{self.args.database}",
        ]
        cpu = self.sampler()
        cpu.begin()
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=self.args.seconds + 120
        )
        if done.returncode != 0:
            raise SystemExit(f"pgbench failed:\n{done.stderr[-3000:]}")
        tps = latency = None
        failed = 0
        for line in done.stdout.splitlines():
            if line.startswith("tps = "):
                tps = float(line.split()[2])
            elif line.startswith("latency average = "):
                latency = float(line.split()[3])
            elif line.startswith("number of failed transactions:"):
                failed = int(line.split(":")[1].split()[0])
        result = {
            "name": "pgbench charge.sql",
            "kind": "pgbench",
            "clients": clients,
            "rps": tps or 0.0,
            "accepted_per_s": tps or 0.0,
            "latency_avg_ms": latency,
            "errors": failed,
            "cpu": cpu.end(),
            "output": done.stdout,
        }
        self.results.append(result)
        print(
            f"  {result['name']:<28} {result['rps']:8.0f} tps  (avg latency {latency} ms)",
            flush=True,
        )
        return result


def settle(seconds: float = 2.0) -> None:
    """Let in-flight simulator webhooks land before the next phase starts."""
    time.sleep(seconds)


# --- Queries per request (in-process) ---------------------------------------------------------------


def count_queries(fixtures: Fixtures) -> list[dict[str, Any]]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts.models import User
    from credits.services import balance_get, credits_adjust
    from generations.models import Generation, Status
    from generations.services import webhook_url_for

    rows: list[dict[str, Any]] = []

    def measure(
        label: str, client: Client, method: str, path: str, expect: int, **kwargs: Any
    ) -> None:
        with CaptureQueriesContext(connection) as captured:
            response = getattr(client, method)(path, **kwargs)
        if response.status_code != expect:
            raise SystemExit(
                f"{label}: expected {expect}, got {response.status_code}: {response.content[:500]!r}"
            )
        statements = [q["sql"] for q in captured.captured_queries]
        control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")
        rows.append(
            {
                "endpoint": label,
                "queries": len(statements),
                "transaction_control": sum(1 for s in statements if s.startswith(control)),
                "sql": statements,
            }
        )

    probe = User.objects.get(pk=fixtures.probe_user_id)
    pages = User.objects.get(pk=fixtures.pages_user_id)
    anonymous = Client()
    prober = Client()
    prober.force_login(probe)
    reader = Client()
    reader.force_login(pages)

    measure("GET /bench/trivial", anonymous, "get", "/bench/trivial", 200)
    body = {"workflow": WORKFLOW, "inputs": {"prompt": "a lighthouse at dusk"}}
    api = "/api/v1/generations"
    measure(
        "POST generations (201)",
        prober,
        "post",
        api,
        201,
        data=body,
        content_type="application/json",
    )
    measure(
        "POST generations (201, 2nd)",
        prober,
        "post",
        api,
        201,
        data=body,
        content_type="application/json",
    )
    # Both are still active unless the simulator's webhooks already finished them: hold them.
    Generation.objects.filter(user=probe).update(status=Status.RUNNING)
    measure(
        "POST generations (429 cap)",
        prober,
        "post",
        api,
        429,
        data=body,
        content_type="application/json",
    )
    Generation.objects.filter(user=probe).update(status=Status.SUCCEEDED)
    credits_adjust(
        user=probe, amount=1 - balance_get(user=probe), reason="bench: go short", actor=None
    )
    measure(
        "POST generations (402 short)",
        prober,
        "post",
        api,
        402,
        data=body,
        content_type="application/json",
    )

    generation = Generation.objects.filter(
        user__email__startswith="hook", status=Status.QUEUED
    ).first()
    if generation is not None:
        url = webhook_url_for(generation).split("://", 1)[1].split("/", 1)[1]
        hook = Client()
        running = {
            "status": "running",
            "run_id": generation.run_id,
            "progress": 0.45,
            "outputs": [],
        }
        success = {
            "status": "success",
            "run_id": generation.run_id,
            "progress": 1,
            "outputs": [
                {"output_id": "o", "data": {"images": [{"url": "http://127.0.0.1:9/x.png"}]}}
            ],
        }
        measure(
            "POST webhook (running)",
            hook,
            "post",
            f"/{url}",
            200,
            data=running,
            content_type="application/json",
        )
        measure(
            "POST webhook (success)",
            hook,
            "post",
            f"/{url}",
            200,
            data=success,
            content_type="application/json",
        )
        measure(
            "POST webhook (duplicate)",
            hook,
            "post",
            f"/{url}",
            200,
            data=success,
            content_type="application/json",
        )
    measure("GET /dashboard/", reader, "get", "/dashboard/", 200)
    measure("GET /dashboard/history/", reader, "get", "/dashboard/history/", 200)
    measure(
        f"GET /dashboard/history/?page={fixtures.pages_last_page}",
        reader,
        "get",
        f"/dashboard/history/?page={fixtures.pages_last_page}",
        200,
    )
    measure("GET /api/v1/generations", reader, "get", api, 200)
    return rows


def money_checks(env: dict[str, str], fixtures: Fixtures, hot_201: int) -> dict[str, Any]:
    from django.db.models import Count, Min

    from credits.models import CreditBalance, LedgerEntry
    from generations.models import Generation

    done = subprocess.run(
        [sys.executable, "manage.py", "check_ledger"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    statuses = dict(
        Generation.objects.filter(user__email__startswith="load")
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    hot_generations = Generation.objects.filter(user_id=fixtures.hot_user_id).count()
    # The most runs the hot user ever had going at once, from their lifetimes (a run counts from
    # its creation, under the lock, until it finished): the cap says at most MAX_CONCURRENT_RUNS.
    spans = Generation.objects.filter(user_id=fixtures.hot_user_id).values_list(
        "created_at", "finished_at"
    )
    moments = sorted(
        [(created, 1) for created, _ in spans] + [(ended, -1) for _, ended in spans if ended]
    )
    running = most_at_once = 0
    for _moment, change in moments:
        running += change
        most_at_once = max(most_at_once, running)
    hot_charges = LedgerEntry.objects.filter(
        user_id=fixtures.hot_user_id, kind=LedgerEntry.Kind.GENERATION_CHARGE
    ).count()
    return {
        "check_ledger_exit": done.returncode,
        "check_ledger": (done.stdout + done.stderr).strip()[-2000:],
        "lowest_balance": CreditBalance.objects.aggregate(m=Min("balance"))["m"],
        "load_generation_statuses": statuses,
        "hot_generations": hot_generations,
        "hot_charges": hot_charges,
        "hot_201_seen": hot_201,
        "hot_balance": CreditBalance.objects.get(user_id=fixtures.hot_user_id).balance,
        "hot_most_at_once": most_at_once,
    }


# --- Report ---------------------------------------------------------------------------------------


def machine_description(server: str) -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = proc_meminfo_gib()
    try:
        import psycopg

        with psycopg.connect(f"{server}/postgres") as conn:
            row = conn.execute("SHOW server_version").fetchone()
            postgres = f"PostgreSQL {row[0] if row else '?'}"
    except Exception:
        postgres = "PostgreSQL ?"
    return (
        f"{os.cpu_count()} vCPU {model}, {memory:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {postgres} (same machine)"
    )


def proc_meminfo_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def cpu_row(result: dict[str, Any]) -> str:
    """Cores used on average during the phase, by whom, and CPU milliseconds per request."""
    cpu = result.get("cpu") or {}
    wall = cpu.get("wall_s") or 1
    busy = f"{cpu.get('machine_busy_s', 0) / wall:.2f}"
    if result["kind"] == "pgbench":
        # pgbench and its backends exit before they can be sampled: the machine total only.
        return f"| {result['name']} | {busy} | | | | | | | | |"
    cores = [f"{cpu.get(f'{key}_s', 0) / wall:.2f}" for key in PARTS]
    requests = result.get("requests") or 0
    per = "–"
    app = "–"
    if requests:
        per = f"{cpu.get('gunicorn_s', 0) * 1000 / requests:.2f}"
        server = sum(cpu.get(f"{key}_s", 0) for key in ("gunicorn", "simulator", "postgres"))
        app = f"{server * 1000 / requests:.2f}"
    workers = result.get("worker_pids") or []
    by_pid = cpu.get("gunicorn_by_pid_s") or {}
    split = " / ".join(f"{by_pid.get(str(pid), 0) / wall:.2f}" for pid in workers) or "–"
    return f"| {result['name']} | {busy} | {' | '.join(cores)} | {split} | {per} | {app} |"


PARTS = ("gunicorn", "simulator", "postgres", "driver", "other")


def report(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    queries: list[dict[str, Any]],
    rss: dict[str, Any],
    checks: dict[str, Any],
    started: datetime,
    load_before: float,
) -> str:
    by_name = {r["name"]: r for r in results}

    def trivial_at(clients: int) -> dict[str, Any] | None:
        return by_name.get(f"trivial c={clients}") or next(
            (r for r in results if r["kind"] == "trivial"), None
        )

    pg = by_name.get("pgbench charge.sql")
    setup = [
        f"Run {started:%Y-%m-%d %H:%M} UTC",
        machine_description(args.server),
        f"gunicorn {args.workers} workers x {args.threads} gthreads",
        f"{args.seconds:g} s per phase",
        f"driver {args.driver} (reconnect every {args.recycle} requests)"
        if args.recycle
        else f"driver {args.driver}",
        "DB_POOL" if args.db_pool else "CONN_MAX_AGE=60",
        *(f"env {item}" for item in args.env),
        f"load average before: {load_before:.2f}",
    ]
    lines = [
        " · ".join(setup),
        "",
        "| phase | clients | requests/s | accepted/s | p50 ms | p95 ms | p99 ms | errors | refused (402/429) | accepted vs trivial | accepted vs pgbench |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        if r["kind"] == "pgbench":
            lines.append(
                f"| {r['name']} | {r['clients']} | {fmt(r['rps'])} tps | {fmt(r['rps'])} | "
                f"avg {fmt(r['latency_avg_ms'], 2)} | | | {r['errors']} | | | 1.00 |"
            )
            continue
        trivial = trivial_at(r["clients"])
        vs_trivial = (
            f"{r['accepted_per_s'] / trivial['rps']:.2f}" if trivial and trivial["rps"] else "–"
        )
        vs_pg = f"{r['accepted_per_s'] / pg['rps']:.2f}" if pg and pg["rps"] else "–"
        refused = ", ".join(f"{k}: {v}" for k, v in sorted(r.get("refused", {}).items())) or "0"
        lines.append(
            f"| {r['name']} | {r['clients']} | {fmt(r['rps'])} | {fmt(r['accepted_per_s'])} | "
            f"{fmt(r['p50_ms'], 1)} | {fmt(r['p95_ms'], 1)} | {fmt(r['p99_ms'], 1)} | {r['errors']} | "
            f"{refused} | {vs_trivial} | {vs_pg} |"
        )
    lines += [
        "",
        "Where the CPU went (average cores in use during the counted seconds, from /proc; 'other' is",
        "everything else on the machine), and CPU milliseconds per request: gunicorn alone, and",
        "gunicorn + simulator + PostgreSQL (for generate, the simulator's webhook for the run is",
        "included: it is part of what one generation costs). 'per worker' is each gunicorn worker's",
        "cores: a keep-alive connection stays with the worker that accepted it, so with few",
        "clients one worker can end up with all of them (e.g. 0.95 / 0.00) and the phase measures",
        "one worker.",
        "",
        "| phase | machine busy | gunicorn | simulator | postgres | driver | other | per worker | gunicorn ms/req | app side ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
        *(cpu_row(r) for r in results),
    ]
    for r in results:
        if r.get("webhook_wrapped"):
            lines.append(
                f"\nNote: {r['name']} ran out of prepared generations {r['webhook_wrapped']} "
                "time(s); later deliveries were duplicates. Raise --webhook-generations."
            )
        if r.get("errors"):
            lines.append(f"\nFirst error in {r['name']}: {r['first_error'][:300]}")
    lines += [
        "",
        "Statements per request (in-process, Django test client, same database). Django 6 logs",
        "BEGIN/COMMIT too; not counted: the `SELECT 1` health check Django runs on the first query",
        "of every request with persistent connections and DB_CONN_HEALTH_CHECKS=true (the default).",
        "",
        "| endpoint | statements | of which BEGIN/COMMIT/ROLLBACK/SAVEPOINT |",
        "|---|---:|---:|",
    ]
    lines += [f"| {q['endpoint']} | {q['queries']} | {q['transaction_control']} |" for q in queries]
    lines += ["", "Peak RSS (VmHWM) per gunicorn process:", ""]
    lines += [f"- {name}: {kib / 1024:.1f} MiB" for name, kib in rss.items()]
    lines += [
        "",
        "Money checks after the run:",
        "",
        f"- check_ledger: exit {checks['check_ledger_exit']} ({checks['check_ledger'].splitlines()[-1] if checks['check_ledger'] else ''})",
        f"- lowest balance: {checks['lowest_balance']}",
        f"- load users' generations by status: {checks['load_generation_statuses']}",
        f"- hot user: {checks['hot_201_seen']} accepted (201) seen by the clients, "
        f"{checks['hot_generations']} generations, {checks['hot_charges']} charges, final balance {checks['hot_balance']}, "
        f"most runs at once {checks['hot_most_at_once']} (MAX_CONCURRENT_RUNS=2)",
    ]
    return "\n".join(lines)


# --- Main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    phases = set(filter(None, args.only.split(","))) or {
        "trivial",
        "generate",
        "hot",
        "webhook",
        "pages",
        "pgbench",
    }
    started = datetime.now(UTC)
    # SIGINT too: a shell that starts us in the background ignores it, and Python would follow.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="comfy-bench-"))
    children = Children(tmp)
    app_port, sim_port = free_port(), free_port()
    env = bench_env(args, app_port, sim_port, tmp / "media")
    base = f"http://127.0.0.1:{app_port}"
    db_created = False
    load_before = os.getloadavg()[0]
    print(f"bench: load average {os.getloadavg()}, logs in {tmp}", flush=True)
    try:
        db_recreate(args.server, args.database)
        db_created = True
        print(f"bench: database {args.database} created; migrating", flush=True)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        sim = children.start(
            "simulator",
            [sys.executable, "manage.py", "simulator", "--instant", "--port", str(sim_port)],
            env,
        )
        wait_http(f"http://127.0.0.1:{sim_port}/__sim__/config", 30, sim, children, "simulator")

        os.environ.update(env)
        import django

        django.setup()
        # In-process requests below log their expected 402/429 as warnings: keep the output clean.
        logging.disable(logging.WARNING)
        t0 = time.monotonic()
        fixtures = setup_data(args, f"http://127.0.0.1:{sim_port}")
        print(f"bench: data created in {time.monotonic() - t0:.1f} s", flush=True)
        from django.db import connections

        connections.close_all()

        gunicorn = children.start(
            "gunicorn",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "config/gunicorn.py",
                "config.wsgi:application",
            ],
            env,
        )
        wait_http(f"{base}/healthz", 60, gunicorn, children, "gunicorn")
        time.sleep(0.5)
        workers = proc_children(gunicorn.pid)
        print(f"bench: gunicorn master {gunicorn.pid}, workers {workers}", flush=True)
        runner = Runner(
            args=args,
            children=children,
            env=env,
            base=base,
            tmp=tmp,
            processes={"gunicorn": [gunicorn.pid, *workers], "simulator": [sim.pid]},
            worker_pids=workers,
        )
        generate_spec = {
            "kind": "generate",
            "sessions": fixtures.load_sessions,
            "csrftoken": fixtures.csrftoken,
            "workflow": WORKFLOW,
        }
        page_cookie = f"sessionid={fixtures.pages_session}"
        hot_201 = 0
        for clients in int_list(args.clients):
            if "trivial" in phases:
                runner.load(f"trivial c={clients}", {"kind": "trivial", "clients": clients})
            if "generate" in phases:
                runner.load(
                    f"generate c={clients} (1,000 users)", {**generate_spec, "clients": clients}
                )
                settle()
        if "hot" in phases:
            hot = runner.load(
                f"generate hot user c={args.hot_clients}",
                {**generate_spec, "sessions": [fixtures.hot_session], "clients": args.hot_clients},
            )
            hot_201 = hot["accepted_with_warmup"]
            settle()
        if "webhook" in phases:
            if "trivial" in phases and args.webhook_clients not in int_list(args.clients):
                runner.load(
                    f"trivial c={args.webhook_clients}",
                    {"kind": "trivial", "clients": args.webhook_clients},
                )
            runner.load(
                f"webhook c={args.webhook_clients}",
                {"kind": "webhook", "webhooks": fixtures.webhooks, "clients": args.webhook_clients},
            )
        if "pages" in phases:
            for clients in int_list(args.page_clients):
                if "trivial" in phases and clients not in int_list(args.clients):
                    runner.load(f"trivial c={clients}", {"kind": "trivial", "clients": clients})
                for label, path in (
                    ("dashboard", "/dashboard/"),
                    ("history p1", "/dashboard/history/"),
                    (
                        f"history p{fixtures.pages_last_page}",
                        f"/dashboard/history/?page={fixtures.pages_last_page}",
                    ),
                ):
                    runner.load(
                        f"{label} c={clients}",
                        {"kind": "page", "path": path, "cookie": page_cookie, "clients": clients},
                    )
        if "pgbench" in phases:
            runner.pgbench(fixtures)
        settle(3)

        # Peak RSS before anything else touches the workers.
        rss = {
            f"worker {pid}": proc_status_kib(pid, "VmHWM") or 0
            for pid in proc_children(gunicorn.pid)
        }
        rss[f"master {gunicorn.pid}"] = proc_status_kib(gunicorn.pid, "VmHWM") or 0
        if set(proc_children(gunicorn.pid)) != set(workers):
            rss["note: workers were replaced during the run (max_requests or a crash)"] = 0
        queries = count_queries(fixtures)
        # The count_queries generations finish through the simulator's webhooks too.
        settle(2)
        # The hot user's own count is reread below; generations made above are not the hot user's.
        checks = money_checks(env, fixtures, hot_201)
        text = report(args, runner.results, queries, rss, checks, started, load_before)
        print("\n" + text)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "started": started.isoformat(),
                        "args": {k: str(v) for k, v in vars(args).items()},
                        "results": runner.results,
                        "queries": queries,
                        "rss_kib": rss,
                        "checks": checks,
                    },
                    indent=2,
                    default=str,
                )
            )
        return 0 if checks["check_ledger_exit"] == 0 else 1
    except KeyboardInterrupt:
        print("bench: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        children.stop_all()
        if db_created and not args.keep_db:
            with contextlib.suppress(Exception):
                db_drop(args.server, args.database)
        if not args.keep_db:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
