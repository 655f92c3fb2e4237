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
from registry_tools.model.digest import Digest
from registry_tools.model.image import Layer
from registry_tools.model.platform import Choice, Platform
from registry_tools.session import Session


BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"


@dataclass
class BaseImage:
    config: dict[str, Any]
    layers: list[Layer]
    config_raw: bytes = b""
    name: str = ""  # as the base annotation records it (recorded_name)
    digest: Digest | None = None  # its manifest's (the platform's image, not an index)


def recorded_name(text: str, role: str = "fromImage") -> str:
    """A base as org.opencontainers.image.base.name records it: a registry reference normalised,
    its digest dropped when it has a tag (the digest is recorded beside it; the tag is what
    `check-base` follows); a path as given."""
    ref = endpoint.parse(text, role).repository
    if ref is None:
        return text
    return str(ref.name_only().with_tag(ref.tag)) if ref.tag else str(ref)


def base_annotations(base: BaseImage | None) -> dict[str, str]:
    """The image spec's annotations naming the base an image was built on (none without one)."""
    if base is None or base.digest is None:
        return {}
    return {BASE_NAME: base.name, BASE_DIGEST: str(base.digest)}


def load_base(src: FromImage, platform: Platform, compressor: str, session: Session) -> BaseImage:
    """The base for `platform`, its layers in the cache, measured; a docker-archive's layers (stored
    uncompressed) compressed with the build's `compressor`."""
    source = endpoint.parse(src.endpoint, "fromImage").image(session, Choice(platform), compressor)
    with source.open(Need.MEASURED) as supply:
        layers = supply.measured()
        image = supply.image()
    return BaseImage(image.config, layers, image.config_raw, recorded_name(src.endpoint),
                     image.manifest_descriptor.digest)
