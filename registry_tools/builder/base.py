"""fromImage: a base image from a docker-archive, an oci-archive, an OCI layout or a pinned reference.

Whatever the source, its blobs are brought into the verified blob cache by that
source's own reader, so the builder sees one kind of base: a config and layers that
are cached blobs with measured diff_ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry_tools.builder.spec import FromImage
from registry_tools.errors import ManifestError, UsageError
from registry_tools.formats.docker_archive import is_docker_archive, read_docker_archive
from registry_tools.formats.oci_layout import LayoutReader
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.image import Layer
from registry_tools.model.platform import Choice, Platform, choose_in_index
from registry_tools.session import Session


@dataclass
class BaseImage:
    config: dict[str, Any]
    layers: list[Layer]
    config_raw: bytes = b""


def load_base(src: FromImage, platform: Platform, session: Session) -> BaseImage:
    if src.kind == "registry":
        return _from_registry(src, platform, session)
    path = Path(src.location)
    if path.is_file() and is_docker_archive(path, f"fromImage {path}"):
        return from_docker_archive(path, src.name, session)
    return _from_layout(path, src.name, platform, session)


def _from_registry(src: FromImage, platform: Platform, session: Session) -> BaseImage:
    ref = refs.parse_normalized(src.location)
    source = session.source(ref)
    image = source.resolve(Digest.parse(ref.digest), Choice(platform))
    source.fetch_layers(image)
    return BaseImage(image.config, image.layers, image.config_raw)


def _from_layout(root: Path, name: str | None, platform: Platform, session: Session) -> BaseImage:
    """An OCI layout directory or an oci-archive; from an index, the entry for `platform`."""
    where = f"fromImage {root}"
    with LayoutReader(root, where) as layout:
        try:
            entries = layout.entries(name)
        except ManifestError as e:
            raise UsageError(f"{where}: not an OCI image layout ({e})") from None
        if not entries:
            raise UsageError(f"{where}: no image" + (f" named {name!r}" if name else ""))
        if len(entries) > 1 and name is None:
            chosen = choose_in_index({"manifests": [d.raw for d in entries]}, platform)
            entries = [entries[chosen]]
        desc = entries[0]
        doc = layout.document(desc, session.cache)
        if isinstance(doc, mf.Index):
            desc = doc.manifests[choose_in_index(doc.choice_view(), platform)]
        image = layout.image(desc, session.cache)
    layers = [session.store.measure(layer, f"{where} layer {layer.descriptor.digest}") for layer in image.layers]
    return BaseImage(image.config, layers, image.config_raw)


def from_docker_archive(path: Path, name: str | None, session: Session) -> BaseImage:
    image = read_docker_archive(path, name, session.cache, f"fromImage {path}")
    return BaseImage(image.config, image.layers, image.config_raw)
