"""The load driver: one phase of the benchmark, run by ``bench/run.py`` as a separate process.

    python bench/load.py SPEC.json   # prints "measuring" when the warm-up is over, then one JSON line

``SPEC.json`` says what to hit (``kind``), with how many concurrent clients, for how long, and
carries the data the requests need (session cookies, webhook URLs). Each client is a coroutine
with its own keep-alive connection, sending request after request until the deadline; a short
warm-up before it is not counted. Latency is measured per request, from just before it is sent
to the end of its body.

Two HTTP clients (``driver`` in the spec):

* ``raw`` (the default): a minimal HTTP/1.1 keep-alive client on asyncio streams. On a 2-core
  machine the driver shares the CPU with the server it measures, so it has to be cheap: this one
  costs ~0.1 ms of CPU per request where httpx costs over 1 ms (bench/README.md has the numbers),
  which would otherwise cap the trivial view, the limit every ratio is taken against.
* ``httpx``: ``httpx.AsyncClient``, to cross-check the raw client's answers.

Kinds:
    trivial   GET /bench/trivial (no session): the limit of a Django view on this server
    page      GET ``path`` as one signed-in user (dashboard, history)
    generate  POST /api/v1/generations; client ``i`` cycles over users ``i, i+c, i+2c, …``
              (a single user in the spec is the hot-row case). 201 is accepted; 402 and 429 are
              the expected refusals, counted apart; anything else is an error.
    webhook   for each prepared generation in turn: POST a ``running`` update, then a terminal
              ``success`` with an image, to the generation's capability URL (as ComfyDeploy does).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

REFUSALS = frozenset({402, 429})
TIMEOUT = 30.0

Send = Callable[[str, str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]]


class RawConnection:
    """One HTTP/1.1 keep-alive connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int, recycle: int = 0) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        # Reconnect after this many requests (0: never). A keep-alive connection stays with the
        # gunicorn worker that accepted it; with a handful of clients one worker can get them
        # all, and reconnecting now and then lets the accept race even that out.
        self.recycle = recycle
        self.sent = 0

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def send(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        try:
            return await asyncio.wait_for(self._send(method, path, headers, body), TIMEOUT)
        except BaseException:
            await self.close()
            raise

    async def _send(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        self.sent += 1
        last = bool(self.recycle) and self.sent % self.recycle == 0
        if last:
            head.append("Connection: close")
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            content = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            content = b"".join(p[:-2] for p in parts)
        else:
            content = await self.reader.read()
            fields["connection"] = "close"
        if last or fields.get("connection", "").lower() == "close":
            await self.close()
        return status, content


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class Phase:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.kind: str = spec["kind"]
        self.clients: int = spec["clients"]
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.all_statuses: Counter[str] = Counter()  # warm-up included (for the money checks)
        self.errors: Counter[str] = Counter()
        self.recording = False
        self.webhook_index = 0
        self.webhook_wrapped = 0
        self.first_error = ""

    async def request(
        self,
        send: Send,
        method: str,
        url: str,
        ok: frozenset[int],
        headers: dict[str, str],
        body: bytes = b"",
    ) -> None:
        started = time.perf_counter()
        try:
            status, content = await send(method, url, headers, body)
        except Exception as exc:  # refused, reset, timed out, malformed (raw or httpx alike)
            error = type(exc).__name__
            self.first_error = self.first_error or f"{error}: {exc}"
            if self.recording:
                self.latencies.append(time.perf_counter() - started)
                self.errors[error] += 1
            return
        self.all_statuses[str(status)] += 1
        expected = status in ok or (status in REFUSALS and self.kind == "generate")
        if not expected:
            self.first_error = self.first_error or f"{status}: {content[:300]!r}"
        if self.recording:
            self.latencies.append(time.perf_counter() - started)
            self.statuses[str(status)] += 1
            if not expected:
                self.errors[str(status)] += 1

    async def client_loop(self, send: Send, number: int, deadline: float) -> None:
        spec = self.spec
        if self.kind == "trivial":
            while time.monotonic() < deadline:
                await self.request(send, "GET", "/bench/trivial", frozenset({200}), {})
        elif self.kind == "page":
            headers = {"Cookie": spec["cookie"]}
            while time.monotonic() < deadline:
                await self.request(send, "GET", spec["path"], frozenset({200}), headers)
        elif self.kind == "generate":
            users: list[str] = spec["sessions"]
            token: str = spec["csrftoken"]
            mine = users[number :: self.clients] or [users[number % len(users)]]
            body = json.dumps(
                {"workflow": spec["workflow"], "inputs": {"prompt": "a lighthouse at dusk"}}
            ).encode()
            turn = 0
            while time.monotonic() < deadline:
                session = mine[turn % len(mine)]
                turn += 1
                headers = {
                    "Cookie": f"sessionid={session}; csrftoken={token}",
                    "X-CSRFToken": token,
                    "Content-Type": "application/json",
                }
                await self.request(
                    send, "POST", "/api/v1/generations", frozenset({201}), headers, body
                )
        elif self.kind == "webhook":
            items: list[list[str]] = spec["webhooks"]
            headers = {"Content-Type": "application/json"}
            while time.monotonic() < deadline:
                if self.webhook_index >= len(items):
                    self.webhook_index = 0
                    self.webhook_wrapped += 1  # from here on these are duplicates: say so
                url, run_id, image = items[self.webhook_index]
                self.webhook_index += 1
                path = urlsplit(url).path
                running = {
                    "event_type": "run.updated",
                    "status": "running",
                    "live_status": "Executing KSampler",
                    "progress": 0.45,
                    "run_id": run_id,
                    "outputs": [],
                }
                success = {
                    "event_type": "run.updated",
                    "status": "success",
                    "live_status": None,
                    "progress": 1.0,
                    "run_id": run_id,
                    "outputs": [
                        {
                            "output_id": "output_images",
                            "data": {"images": [{"url": image, "type": "output"}]},
                        }
                    ],
                }
                for payload in (running, success):
                    await self.request(
                        send, "POST", path, frozenset({200}), headers, json.dumps(payload).encode()
                    )
        else:
            raise SystemExit(f"unknown kind {self.kind!r}")

    async def run_clients(self, sends: list[Send]) -> dict[str, Any]:
        warmup = float(self.spec.get("warmup", 1.0))
        if warmup > 0:
            end = time.monotonic() + warmup
            await asyncio.gather(*(self.client_loop(s, n, end) for n, s in enumerate(sends)))
        self.recording = True
        sys.stdout.write("measuring\n")
        sys.stdout.flush()
        cpu_before = os.times()
        started = time.perf_counter()
        deadline = time.monotonic() + float(self.spec["seconds"])
        await asyncio.gather(*(self.client_loop(s, n, deadline) for n, s in enumerate(sends)))
        elapsed = time.perf_counter() - started
        cpu_after = os.times()
        return {
            "seconds": elapsed,
            "driver_cpu_s": (cpu_after.user - cpu_before.user)
            + (cpu_after.system - cpu_before.system),
        }

    async def run(self) -> dict[str, Any]:
        base = urlsplit(self.spec["base"])
        if self.spec.get("driver", "raw") == "raw":
            connections = [
                RawConnection(
                    base.hostname or "127.0.0.1",
                    base.port or 80,
                    recycle=int(self.spec.get("recycle", 0)),
                )
                for _ in range(self.clients)
            ]
            try:
                timing = await self.run_clients([c.send for c in connections])
            finally:
                for connection in connections:
                    await connection.close()
        else:
            timing = await self.run_httpx()
        return self.summary(timing)

    async def run_httpx(self) -> dict[str, Any]:
        import httpx

        limits = httpx.Limits(
            max_connections=self.clients,
            max_keepalive_connections=self.clients,
            keepalive_expiry=60,
        )
        # Cookies are sent explicitly per request (one user per request): never remember any.
        jar = http.cookiejar.CookieJar(
            policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
        )
        async with httpx.AsyncClient(
            base_url=self.spec["base"],
            limits=limits,
            timeout=httpx.Timeout(TIMEOUT),
            cookies=jar,
            trust_env=False,
            follow_redirects=False,
        ) as client:

            async def send(
                method: str, path: str, headers: dict[str, str], body: bytes
            ) -> tuple[int, bytes]:
                response = await client.request(method, path, headers=headers, content=body)
                return response.status_code, response.content

            return await self.run_clients([send] * self.clients)

    def summary(self, timing: dict[str, Any]) -> dict[str, Any]:
        elapsed = timing["seconds"]
        latencies = sorted(self.latencies)
        total = len(latencies)
        statuses = dict(self.statuses)
        accepted = {"generate": "201"}.get(self.kind, "200")
        return {
            "kind": self.kind,
            "clients": self.clients,
            "driver": self.spec.get("driver", "raw"),
            "seconds": elapsed,
            "requests": total,
            "rps": total / elapsed if elapsed else 0.0,
            "accepted": statuses.get(accepted, 0),
            "accepted_with_warmup": self.all_statuses.get(accepted, 0),
            "accepted_per_s": statuses.get(accepted, 0) / elapsed if elapsed else 0.0,
            "statuses": statuses,
            "refused": {code: n for code, n in statuses.items() if int(code) in REFUSALS},
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "first_error": self.first_error,
            "p50_ms": (percentile(latencies, 0.50) or 0) * 1000,
            "p95_ms": (percentile(latencies, 0.95) or 0) * 1000,
            "p99_ms": (percentile(latencies, 0.99) or 0) * 1000,
            "driver_cpu_s": timing["driver_cpu_s"],
            "driver_cpu_ms_per_request": timing["driver_cpu_s"] * 1000 / total if total else 0,
            "webhook_wrapped": self.webhook_wrapped,
        }


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    result = asyncio.run(Phase(spec).run())
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
