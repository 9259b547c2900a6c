"""Durable outputs: when a generation succeeds, a background task copies its images into our
storage (with a thumbnail), and the pages and the API serve our copy, to its owner only, long after
ComfyDeploy's URL stopped answering. Oversized or non-image outputs are refused and logged; failed
downloads are retried with backoff and keep the upstream URL meanwhile."""
# ruff: noqa: F811 (pytest fixtures are imported by name and requested as arguments)

import io
import json
import logging
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.template import Context, Template
from django.test import Client
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from PIL import Image

from apikeys.services import api_key_create
from generations.models import Generation
from generations.outputs import MAX_ATTEMPTS, outputs_persist
from generations.simulator import Simulator, render_image
from tests.simulator_fixtures import app_simulator, simulator  # noqa: F401  (fixtures)

PERSIST_TASK = "generations.outputs.outputs_persist"


@pytest.fixture
def media(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


def _stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _png(size: int = 64, noise: bool = False) -> bytes:
    image = Image.radial_gradient("L").resize((size, size)).convert("RGB")
    if noise:
        image = Image.frombytes("RGB", (size, size), random.Random(size).randbytes(size * size * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@dataclass
class Page:
    status: int = 200
    content_type: str = "image/png"
    body: bytes = b""
    chunked: bool = False  # no Content-Length: the size is only known by reading


@dataclass
class FakeFiles:
    """A tiny HTTP server standing in for an upstream bucket."""

    pages: dict[str, Page] = field(default_factory=dict)
    url: str = ""


@pytest.fixture
def fake_files() -> Iterator[FakeFiles]:
    files = FakeFiles()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            page = files.pages.get(
                self.path, Page(status=404, content_type="text/plain", body=b"no")
            )
            self.send_response(page.status)
            self.send_header("Content-Type", page.content_type)
            if page.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(page.body), 1024):
                    chunk = page.body[start : start + 1024]
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(page.body)))
                self.end_headers()
                self.wfile.write(page.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    files.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield files
    finally:
        server.shutdown()
        server.server_close()


def _succeeded(user, workflow, urls: list[str]) -> Generation:
    return Generation.objects.create(
        user=user,
        workflow=workflow,
        cost=2,
        inputs={"prompt": "a test"},
        status="succeeded",
        outputs=[{"url": url, "type": "image", "output_id": "output_images"} for url in urls],
    )


def _api_outputs(client: Client, generation: Generation) -> list[dict[str, str]]:
    response = client.get(f"/api/v1/generations/{generation.id}")
    assert response.status_code == 200
    return response.json()["outputs"]


@pytest.mark.django_db(transaction=True)
def test_it_copies_outputs_and_serves_them_after_upstream_stops_answering(
    alice,
    bob,
    staff,
    alice_client,
    bob_client,
    workflow,
    media,
    settings,
    app_simulator: Simulator,
) -> None:
    settings.POLL_REFRESH_AFTER_SECONDS = 0  # every API read re-checks upstream while running
    _key, token = api_key_create(user=alice, name="script")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    prompt = "a red fox in snow"
    started = api.post(
        "/api/v1/generations",
        {"workflow": workflow.slug, "inputs": {"prompt": prompt}},
        content_type="application/json",
    )
    assert started.status_code == 201
    generation = Generation.objects.get(pk=started.json()["id"])
    assert app_simulator.wait_for(lambda: app_simulator.run(generation.run_id).status == "success")

    # The client polls; the success is applied and, once committed, the copy is enqueued.
    polled = api.get(f"/api/v1/generations/{generation.id}").json()
    assert polled["status"] == "succeeded"
    assert polled["outputs"][0]["url"].startswith(app_simulator.origin)  # upstream until copied
    assert DBTaskResult.objects.filter(task_path=PERSIST_TASK, status="READY").count() == 1

    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)

    generation.refresh_from_db()
    item = generation.outputs[0]
    base = f"generations/{alice.pk}/{generation.id}/0"
    assert (item["file"], item["thumbnail"], item["content_type"]) == (
        f"{base}.png",
        f"{base}.thumb.webp",
        "image/png",
    )
    assert _stored_files(media) == [f"{base}.png", f"{base}.thumb.webp"]
    assert (media / f"{base}.png").read_bytes() == render_image(prompt, 0)

    app_simulator.stop()  # ComfyDeploy's URL is gone for good

    url = _api_outputs(api, generation)[0]["url"]
    assert url == f"{settings.APP_URL}/media/{base}.png"
    path = url.removeprefix(settings.APP_URL)
    served = alice_client.get(path)
    assert served.status_code == 200
    assert served["Content-Type"] == "image/png"
    assert "private" in served["Cache-Control"]
    assert b"".join(served.streaming_content) == render_image(prompt, 0)
    # Scripts fetch it with their key.
    assert api.get(path).status_code == 200

    # Pages: the template filters give our copy and a small thumbnail.
    rendered = Template(
        "{% load outputs %}{{ image|output_url }} {{ image|output_thumbnail_url }}"
    ).render(Context({"image": item}))
    assert rendered == f"/media/{base}.png /media/{base}.thumb.webp"
    thumbnail = alice_client.get(f"/media/{base}.thumb.webp")
    assert thumbnail["Content-Type"] == "image/webp"
    with Image.open(io.BytesIO(b"".join(thumbnail.streaming_content))) as small:
        assert max(small.size) <= 384

    # Only alice (and staff) see it.
    staff_client = Client()
    staff_client.force_login(staff)
    assert staff_client.get(path).status_code == 200
    assert bob_client.get(path).status_code == 404
    _bobs_key, bobs_token = api_key_create(user=bob, name="bob")
    assert Client(HTTP_AUTHORIZATION=f"Bearer {bobs_token}").get(path).status_code == 404
    anonymous = Client().get(path)
    assert anonymous.status_code == 302
    assert "/accounts/login/" in anonymous["Location"]


@pytest.mark.django_db
def test_it_does_not_duplicate_files_when_the_copy_runs_twice(
    alice, workflow, media, fake_files
) -> None:
    fake_files.pages["/a.png"] = Page(body=_png())
    fake_files.pages["/b.png"] = Page(body=_png(48))
    generation = _succeeded(alice, workflow, [f"{fake_files.url}/a.png", f"{fake_files.url}/b.png"])

    outputs_persist.call(str(generation.id))
    generation.refresh_from_db()
    first_outputs, first_files = generation.outputs, _stored_files(media)
    outputs_persist.call(str(generation.id))
    generation.refresh_from_db()

    assert len(first_files) == 4  # two images, two thumbnails
    assert _stored_files(media) == first_files
    assert generation.outputs == first_outputs


@pytest.mark.django_db
def test_it_refuses_and_logs_oversized_outputs(
    alice, alice_client, workflow, media, settings, fake_files, caplog
) -> None:
    settings.OUTPUT_MAX_BYTES = 4096
    big = _png(200, noise=True)
    assert len(big) > 4096
    fake_files.pages["/declared.png"] = Page(body=big)
    fake_files.pages["/streamed.png"] = Page(body=big, chunked=True)
    urls = [f"{fake_files.url}/declared.png", f"{fake_files.url}/streamed.png"]
    generation = _succeeded(alice, workflow, urls)

    with caplog.at_level(logging.WARNING, logger="generations.outputs"):
        outputs_persist.call(str(generation.id))

    generation.refresh_from_db()
    assert ["limit" in item.get("refused", "") for item in generation.outputs] == [True, True]
    assert _stored_files(media) == []
    refusals = [r for r in caplog.records if r.getMessage().startswith("output refused")]
    assert len(refusals) == 2
    assert {r.generation_id for r in refusals} == {str(generation.id)}
    # Nothing to retry, and the API keeps pointing at upstream.
    assert not DBTaskResult.objects.filter(task_path=PERSIST_TASK).exists()
    assert [o["url"] for o in _api_outputs(alice_client, generation)] == urls


@pytest.mark.django_db
def test_it_refuses_and_logs_outputs_that_are_not_images(
    alice, workflow, media, fake_files, caplog
) -> None:
    html = b"<!doctype html><script>alert(1)</script>"
    fake_files.pages["/page.html"] = Page(content_type="text/html; charset=utf-8", body=html)
    fake_files.pages["/lying.png"] = Page(content_type="image/png", body=html)
    generation = _succeeded(
        alice, workflow, [f"{fake_files.url}/page.html", f"{fake_files.url}/lying.png"]
    )

    with caplog.at_level(logging.WARNING, logger="generations.outputs"):
        outputs_persist.call(str(generation.id))

    generation.refresh_from_db()
    reasons = [item.get("refused", "") for item in generation.outputs]
    assert "is not an image" in reasons[0]
    assert "not a readable image" in reasons[1]
    assert _stored_files(media) == []
    assert len([r for r in caplog.records if r.getMessage().startswith("output refused")]) == 2


@pytest.mark.django_db
def test_it_retries_failed_downloads_with_backoff_and_serves_upstream_meanwhile(
    alice, alice_client, workflow, media, fake_files, caplog
) -> None:
    url = f"{fake_files.url}/later.png"
    fake_files.pages["/later.png"] = Page(status=503, content_type="text/plain", body=b"busy")
    generation = _succeeded(alice, workflow, [url])

    outputs_persist.call(str(generation.id))

    generation.refresh_from_db()
    assert "file" not in generation.outputs[0] and "refused" not in generation.outputs[0]
    assert _api_outputs(alice_client, generation)[0]["url"] == url
    retry = DBTaskResult.objects.get(task_path=PERSIST_TASK)
    assert retry.args_kwargs["args"] == [str(generation.id), 2]
    assert retry.run_after > timezone.now()

    # Upstream recovers: the retry copies it.
    fake_files.pages["/later.png"] = Page(body=_png())
    outputs_persist.call(*retry.args_kwargs["args"])
    generation.refresh_from_db()
    assert generation.outputs[0]["file"].endswith("/0.png")
    assert _api_outputs(alice_client, generation)[0]["url"].endswith("/0.png")
    assert _api_outputs(alice_client, generation)[0]["url"] != url


@pytest.mark.django_db
def test_it_gives_up_after_the_last_attempt(alice, workflow, media, fake_files, caplog) -> None:
    fake_files.pages["/gone.png"] = Page(status=500, content_type="text/plain", body=b"")
    generation = _succeeded(alice, workflow, [f"{fake_files.url}/gone.png"])

    with caplog.at_level(logging.WARNING, logger="generations.outputs"):
        outputs_persist.call(str(generation.id), MAX_ATTEMPTS)

    assert not DBTaskResult.objects.filter(task_path=PERSIST_TASK).exists()
    assert any(r.levelno == logging.ERROR and "giving up" in r.getMessage() for r in caplog.records)
    generation.refresh_from_db()
    assert generation.outputs[0]["url"].endswith("/gone.png")
    assert json.dumps(generation.outputs)  # still plain JSON, nothing half-written
