"""The image model: layers and images as values, whatever their source or destination.

Nothing here touches the network or the disk. A layer is its descriptor (compressed
digest, size, media type) and its diff_id; `size` is its uncompressed size once some
run has measured it (None until then: the store's size record is only a hint). An image
is its manifest and config, verbatim, and its layers in order.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest, Readable, ReadableFile
from registry_tools.model.platform import Platform


LAYER_KEY = "dev.registry-tools.layer.key"  # a portable layer's input key, recorded in its descriptor


@dataclass(frozen=True)
class Layer:
    descriptor: mf.Descriptor
    diff_id: Digest
    size: int | None = None  # uncompressed bytes, measured and checked against diff_id


@dataclass
class Image:
    """One platform's image: manifest and config bytes verbatim, layers with their facts."""

    manifest: mf.ImageManifest
    manifest_descriptor: mf.Descriptor
    config_raw: bytes
    config: dict[str, Any]
    layers: list[Layer] = field(default_factory=list)
    index_digest: Digest | None = None  # the digest asked for, when it named an index

    @property
    def platform(self) -> Platform:
        c = self.config
        return Platform(str(c.get("os") or ""), str(c.get("architecture") or ""), str(c.get("variant") or ""))

    @property
    def chosen_platform(self) -> Platform:
        """The platform the index entry names (what was matched), else the config's."""
        p = self.manifest_descriptor.platform
        if p and p.get("os") and p.get("architecture"):
            return Platform.from_json(p)
        return self.platform

    @property
    def config_digest(self) -> Digest:
        return self.manifest.config.digest



class BlobOrigin(Protocol):
    """Where a destination reads the blobs it must write: the verified cache, or a registry the
    bytes stream from (a copy between registries stores nothing on the way)."""

    def open(self, desc: mf.Descriptor) -> AbstractContextManager[Readable]:
        """The blob's bytes from the start, verified (size and digest) by the time they end."""
        ...

    def local(self, desc: mf.Descriptor) -> Path:
        """A verified copy on disk (for the chunked upload, which sends ranges)."""
        ...

    def mounts(self, desc: mf.Descriptor, domain: str) -> list[str]:
        """Repositories of registry `domain` known to hold the blob (to mount it from)."""
        ...


class LayerSupply(Protocol):
    """How a source makes an image's layers available, verified, in the store.

    A registry downloads them in the background; a local source has them already; the
    builder packs them, and its manifest exists only once the last one is packed.
    """

    def image(self) -> Image:
        """The whole image (waiting, for a build, until every layer is packed)."""
        ...

    def count(self) -> int:
        """How many layers the image has (known before they are)."""
        ...

    def ready(self) -> Iterator[int]:
        """Layer indexes in the order the layers become available."""
        ...

    def early(self, i: int) -> "tuple[Layer, int, Callable[[], ReadableFile]] | None":
        """Layer i while it still arrives, if the source can offer that: the layer, the size its
        format records, and an opener of its compressed bytes so far (None: use layer(i))."""
        ...

    def layer(self, i: int) -> Layer:
        """Layer i once its blob is stored (with its size if some run measured it)."""
        ...

    def measured(self) -> list[Layer]:
        """Every layer, stored, its diff_id checked and its size measured."""
        ...

    @property
    def origin(self) -> BlobOrigin:
        """Where the image's blobs are read from (the cache, unless the layers were left where
        they are for a registry destination to relay)."""
        ...
