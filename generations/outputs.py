"""Durable copies of a generation's outputs.

ComfyDeploy's image URLs are pre-signed and expire after an hour, so when a generation succeeds a
background task (``outputs_persist``, enqueued on commit by ``generation_apply_snapshot``) copies
each image into Django's default storage (local media, or S3 through django-storages) with a
WebP thumbnail for galleries, and from then on every page and the API serve our copy.

What is stored where: each item of ``Generation.outputs`` keeps its upstream ``url`` and gains

* ``file``: the storage name of our copy, ``generations/<user id>/<generation id>/<n>.<ext>``;
* ``thumbnail``: the storage name of a ≤384 px WebP (absent if one could not be made);
* ``content_type``: the copy's MIME type (from the decoded image, never from upstream);
* ``refused``: why the output was not copied (too big, not an image); it is not tried again.

Read them through :func:`output_url` / :func:`output_thumbnail_url` (templates:
``{% load outputs %}{{ image|output_url }}``), never from the dict directly.

A download that fails for a reason that may pass (connection error, timeout, a 5xx) is retried
with backoff by re-enqueueing the task, up to ``MAX_ATTEMPTS``; the upstream URL is served
meanwhile. Running the task again is harmless: outputs already copied are skipped and file names
are deterministic, so nothing is duplicated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import timedelta
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.tasks import task
from django.utils import timezone
from PIL import Image, ImageOps

from generations.models import Generation

logger = logging.getLogger("generations.outputs")

MAX_ATTEMPTS = 6
# Seconds to wait before attempt 2, 3, …: the last try lands ~50 min in, before upstream URLs expire.
RETRY_DELAYS = (30, 120, 300, 900, 1800)
THUMBNAIL_SIZE = 384
# Decoded size cap: a small compressed file can still describe a gigantic image.
MAX_PIXELS = 36_000_000
DOWNLOAD_TIMEOUT = httpx.Timeout(connect=10, read=30, write=10, pool=10)
# Pillow format → (extension, content type). Only formats a browser shows natively are kept.
IMAGE_FORMATS = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
}
THUMBNAIL_CONTENT_TYPE = "image/webp"


class OutputRefused(Exception):
    """The output is not something we store (too big, not an image). Not retried."""


class OutputUnavailable(Exception):
    """The download failed in a way that may pass (network, timeout, upstream error). Retried."""


# --- Reading stored outputs (pages, API) ----------------------------------------------------------


def _storage_url(name: str) -> str:
    return default_storage.url(name)


def output_url(item: Mapping[str, Any]) -> str:
    """Where to show or download an output: our copy once stored, else the upstream URL."""
    name = item.get("file")
    if isinstance(name, str) and name:
        return _storage_url(name)
    url = item.get("url")
    return url if isinstance(url, str) else ""


def output_thumbnail_url(item: Mapping[str, Any]) -> str:
    """A small version for galleries: the thumbnail, else the full image."""
    name = item.get("thumbnail")
    if isinstance(name, str) and name:
        return _storage_url(name)
    return output_url(item)


def outputs_for_api(items: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The API's ``outputs``: ``[{"url", "type"}]`` with absolute URLs to our copies when stored."""
    result = []
    for item in items:
        url = output_url(item)
        if url.startswith("/"):
            url = f"{settings.APP_URL}{url}"
        result.append({"url": url, "type": item.get("type", "image")})
    return result


def output_storage_dir(generation: Generation) -> str:
    return f"generations/{generation.user_id}/{generation.id}"


# --- Scheduling -----------------------------------------------------------------------------------


def outputs_persist_schedule(*, generation_id: object, attempt: int = 1) -> None:
    """Queue the copy of a generation's outputs (attempt 1 now, later ones after a backoff).

    Called from ``transaction.on_commit``: a failure to enqueue is logged rather than raised, so the
    webhook or poll that committed the success still gets its answer.
    """
    delay = RETRY_DELAYS[min(attempt - 2, len(RETRY_DELAYS) - 1)] if attempt > 1 else 0
    try:
        task_ = outputs_persist
        if delay:
            task_ = task_.using(run_after=timezone.now() + timedelta(seconds=delay))
        task_.enqueue(str(generation_id), attempt)
    except Exception:
        logger.exception(
            "could not enqueue the output copy", extra={"generation_id": str(generation_id)}
        )


@task()
def outputs_persist(generation_id: str, attempt: int = 1) -> str:
    """Copy a generation's outputs into our storage; re-enqueue itself while downloads fail."""
    return outputs_persist_now(generation_id=generation_id, attempt=attempt)


# --- Copying --------------------------------------------------------------------------------------

_client_lock = threading.Lock()
_client: httpx.Client | None = None


def _http() -> httpx.Client:
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(
                timeout=DOWNLOAD_TIMEOUT,
                follow_redirects=True,
                max_redirects=3,
                headers={"User-Agent": "comfy-credits/1.0", "Accept": "image/*"},
            )
        return _client


def _download(url: str, *, max_bytes: int) -> tuple[bytes, str]:
    """The body and content type of ``url``; refuses non-images and anything over ``max_bytes``
    without reading further than the cap."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise OutputRefused("the URL is not http(s)")
    try:
        with _http().stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
            if response.status_code != 200:
                raise OutputUnavailable(f"upstream answered HTTP {response.status_code}")
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if not content_type.startswith("image/"):
                raise OutputRefused(f"content type {content_type or 'missing'!r} is not an image")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise OutputRefused(f"{declared} bytes is over the {max_bytes}-byte limit")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise OutputRefused(f"more than the {max_bytes}-byte limit")
    except httpx.HTTPError as exc:
        raise OutputUnavailable(f"{type(exc).__name__}: {exc}"[:200]) from exc
    return bytes(body), content_type


def _decode(data: bytes) -> tuple[str, Image.Image]:
    """(Pillow format, first frame fully decoded) if ``data`` is a complete image we keep; else
    OutputRefused."""
    try:
        with Image.open(BytesIO(data)) as image:
            if image.format not in IMAGE_FORMATS:
                raise OutputRefused(f"image format {image.format or 'unknown'} is not kept")
            if image.width * image.height > MAX_PIXELS:
                raise OutputRefused(f"{image.width}x{image.height} pixels is too large")
            image.load()  # decodes everything: a truncated or corrupt file fails here
            return image.format, image.copy()
    except OutputRefused:
        raise
    except Exception as exc:  # Pillow raises many types for broken input
        raise OutputRefused(f"not a readable image ({type(exc).__name__})") from exc


def _thumbnail(image: Image.Image) -> bytes:
    image = ImageOps.exif_transpose(image)  # upright, as the browser shows the original
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    out = BytesIO()
    image.save(out, "WEBP", quality=80, method=4)
    return out.getvalue()


def _save(name: str, data: bytes) -> str:
    # Deterministic names: a re-run replaces its own earlier file instead of adding "_x1y2z3".
    if default_storage.exists(name):
        default_storage.delete(name)
    return default_storage.save(name, ContentFile(data))


def _stored(item: Mapping[str, Any]) -> bool:
    name = item.get("file")
    return bool(name) and default_storage.exists(name)


def _copy_one(generation: Generation, index: int, url: str) -> dict[str, Any]:
    """Download, check and store one image output; the keys to merge into its item."""
    data, _declared_type = _download(url, max_bytes=settings.OUTPUT_MAX_BYTES)
    image_format, image = _decode(data)
    extension, content_type = IMAGE_FORMATS[image_format]
    base = f"{output_storage_dir(generation)}/{index}"
    stored: dict[str, Any] = {
        "file": _save(f"{base}.{extension}", data),
        "content_type": content_type,
    }
    try:
        stored["thumbnail"] = _save(f"{base}.thumb.webp", _thumbnail(image))
    except Exception:
        # The image itself is fine and stored; galleries fall back to it.
        logger.warning(
            "thumbnail failed", exc_info=True, extra={**generation.log_context, "index": index}
        )
    return stored


def outputs_persist_now(*, generation_id: object, attempt: int = 1) -> str:
    """One pass of the copy (what the task runs). Returns a one-line summary."""
    generation = Generation.objects.filter(pk=generation_id).first()
    if generation is None:
        return "generation not found"
    todo = [
        (index, item["url"])
        for index, item in enumerate(generation.outputs)
        if item.get("type") == "image"
        and item.get("url")
        and not item.get("refused")
        and not _stored(item)
    ]
    results: dict[int, tuple[str, dict[str, Any]]] = {}
    failed = 0
    for index, url in todo:
        context = {
            **generation.log_context,
            "index": index,
            "host": urlsplit(url).netloc,
            "attempt": attempt,
        }
        try:
            results[index] = (url, _copy_one(generation, index, url))
        except OutputRefused as exc:
            logger.warning("output refused: %s", exc, extra=context)
            results[index] = (url, {"refused": str(exc)[:300]})
        except OutputUnavailable as exc:
            logger.warning("output download failed: %s", exc, extra=context)
            failed += 1
        except Exception:
            # Storage trouble (disk full, S3 down) passes too: retry rather than lose the image.
            logger.exception("output copy failed", extra=context)
            failed += 1
    if results:
        _merge(generation_id=generation.pk, results=results)
    if failed and attempt < MAX_ATTEMPTS:
        outputs_persist_schedule(generation_id=generation.pk, attempt=attempt + 1)
    elif failed:
        logger.error(
            "giving up copying %d output(s); the upstream URL stays",
            failed,
            extra={**generation.log_context, "attempt": attempt},
        )
    copied = sum(1 for _url, extra in results.values() if "file" in extra)
    refused = len(results) - copied
    return f"{copied} copied, {refused} refused, {failed} failed (attempt {attempt})"


def _merge(*, generation_id: object, results: Mapping[int, tuple[str, dict[str, Any]]]) -> None:
    """Write the results onto the outputs under the row lock (webhooks may be updating it)."""
    with transaction.atomic():
        generation = Generation.objects.select_for_update().get(pk=generation_id)
        outputs = list(generation.outputs)
        changed = False
        for index, (url, extra) in results.items():
            # Only onto the very output that was downloaded.
            if index < len(outputs) and outputs[index].get("url") == url:
                outputs[index] = {**outputs[index], **extra}
                changed = True
        if changed:
            generation.outputs = outputs
            generation.save(update_fields=["outputs", "updated_at"])
