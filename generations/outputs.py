"""Durable copies of a generation's outputs (owned by the durable-outputs work, issue 9)."""

import logging

logger = logging.getLogger("generations.outputs")


def outputs_persist_schedule(*, generation_id: object) -> None:
    """Queue the download of a succeeded generation's outputs into our storage."""
    logger.info("outputs persistence not configured yet", extra={"generation_id": str(generation_id)})
