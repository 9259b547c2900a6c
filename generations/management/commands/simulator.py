"""``manage.py simulator``: run the fake ComfyDeploy until Ctrl-C or SIGTERM."""

import logging
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from generations.simulator import SIMULATOR_API_KEY, SIMULATOR_DEPLOYMENT_ID, Simulator


class Command(BaseCommand):
    help = (
        "Run the ComfyDeploy simulator: the API, webhooks and generated images on this machine. "
        "With no COMFY_DEPLOY_API_KEY the app talks to it at http://127.0.0.1:SIMULATOR_PORT/api."
    )
    requires_system_checks: list[str] = []  # it needs no database and no app checks

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", default="127.0.0.1", help="Interface to listen on (default 127.0.0.1)."
        )
        parser.add_argument(
            "--port",
            type=int,
            default=None,
            help="Port (default: the SIMULATOR_PORT setting, 8188).",
        )
        parser.add_argument(
            "--api-key", default=SIMULATOR_API_KEY, help="Bearer key clients must send."
        )
        parser.add_argument(
            "--step-seconds",
            type=float,
            default=1.0,
            help="Seconds between lifecycle steps (queued, started, progress ticks, done). Default 1.",
        )
        parser.add_argument(
            "--instant",
            action="store_true",
            help="Finish every run almost immediately (benchmarks).",
        )
        parser.add_argument(
            "--public-url",
            default="",
            help="Base URL browsers use to reach this server, for image links (e.g. behind Docker).",
        )
        parser.add_argument(
            "--verbose-requests", action="store_true", help="Log every HTTP request."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        port = options["port"] if options["port"] is not None else settings.SIMULATOR_PORT
        if not 0 <= port <= 65535:
            raise CommandError(f"--port {port} is not a TCP port.")
        if options["step_seconds"] < 0:
            raise CommandError("--step-seconds cannot be negative.")
        if options["verbose_requests"]:
            logging.getLogger("generations.simulator").setLevel(logging.DEBUG)
        simulator = Simulator(
            host=options["host"],
            port=port,
            api_key=options["api_key"],
            step_seconds=options["step_seconds"],
            instant=options["instant"],
            public_url=options["public_url"] or None,
        )
        try:
            simulator.start()
        except OSError as exc:
            raise CommandError(f"Cannot listen on {options['host']}:{port}: {exc}") from exc

        stopped = threading.Event()
        # Containers stop processes with SIGTERM: shut down as cleanly as on Ctrl-C.
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        self.stdout.write(
            self.style.SUCCESS(f"ComfyDeploy simulator listening on {simulator.url}")
            + f"\n  API key:        {options['api_key']}"
            + f"\n  deployment id:  {SIMULATOR_DEPLOYMENT_ID}"
            + f"\n  control:        POST {simulator.origin}/__sim__/config, /__sim__/reset"
            + "\nPress Ctrl-C to stop."
        )
        if settings.COMFY_DEPLOY_API_KEY:
            self.stderr.write(
                "Note: COMFY_DEPLOY_API_KEY is set, so the app talks to the real ComfyDeploy, not to this."
            )
        try:
            while not stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            simulator.stop()
            self.stdout.write("Simulator stopped.")
