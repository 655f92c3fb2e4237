"""fromImage: a base image from any source endpoint (a docker-archive, an oci-archive, an OCI
layout, a pinned reference).

Whatever the source, its blobs come into the verified blob cache through the endpoint's
own source and the copy engine's supply, so the builder sees one kind of base: a config
and layers that are cached blobs with measured diff_ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry_tools import endpoint
from registry_tools.builder.spec import FromImage
from registry_tools.engine import Need
from registry_tools.model.image import Layer
from registry_tools.model.platform import Choice, Platform
from registry_tools.session import Session


@dataclass
class BaseImage:
    config: dict[str, Any]
    layers: list[Layer]
    config_raw: bytes = b""


def load_base(src: FromImage, platform: Platform, compressor: str, session: Session) -> BaseImage:
    """The base for `platform`, its layers in the cache, measured; a docker-archive's layers (stored
    uncompressed) compressed with the build's `compressor`."""
    source = endpoint.parse(src.endpoint, "fromImage").image(session, Choice(platform), compressor)
    with source.open(Need.MEASURED) as supply:
        layers = supply.measured()
        image = supply.image()
    return BaseImage(image.config, layers, image.config_raw)
