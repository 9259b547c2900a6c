"""Docker HEALTHCHECK: GET /healthz on this container (200 = healthy; 503 = no database).

Runs with the standard library only. The request carries a Host header taken from ALLOWED_HOSTS,
because Django answers 400 to a host it does not serve.
"""

import os
import sys
import urllib.error
import urllib.request


def _host() -> str:
    for entry in os.environ.get("ALLOWED_HOSTS", "").split(","):
        entry = entry.strip().lstrip(".")
        if entry and entry != "*":
            return entry
    return "localhost"


def main() -> int:
    port = os.environ.get("PORT", "8000")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/healthz",
        headers={"Host": _host(), "X-Forwarded-Proto": "https", "User-Agent": "docker-healthcheck"},
    )
    try:
        with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
