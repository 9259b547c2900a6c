"""Where to show a generation's outputs: ``{% load outputs %}``.

``{{ image|output_url }}`` is our stored copy once it exists (else the upstream URL, which expires
after an hour); ``{{ image|output_thumbnail_url }}`` is the ≤384 px thumbnail for galleries (else
the full image). ``image`` is an item of ``generation.outputs`` / ``generation.images``.
"""

from collections.abc import Mapping
from typing import Any

from django import template

from generations import outputs

register = template.Library()


@register.filter
def output_url(item: Mapping[str, Any]) -> str:
    return outputs.output_url(item) if isinstance(item, Mapping) else ""


@register.filter
def output_thumbnail_url(item: Mapping[str, Any]) -> str:
    return outputs.output_thumbnail_url(item) if isinstance(item, Mapping) else ""
