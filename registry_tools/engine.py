"""The copy engine: any source to any destination, and what every copy shares.

Every operation is a copy from a source (a registry, an OCI layout or oci-archive, a
docker-archive, the builder) to a destination (a registry, an archive, a layout, a
stream, a hash). `copy` resolves the image at the source, lets the source make its
layers available in the verified store (in the background where that overlaps with
writing), and hands both to the destination; if a blob in the cache turns out damaged
it is evicted and the copy runs once more. How a copy reports progress is here too.
"""
from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Callable, Protocol, TypeVar

from registry_tools.errors import CacheDamaged
from registry_tools.model.digest import Digest
from registry_tools.model.image import Image, Layer, LayerSupply
from registry_tools.store.cache import BlobCache

log = logging.getLogger("registry_tools.engine")

DEFAULT_CONCURRENCY = 4
T = TypeVar("T")
R = TypeVar("R", covariant=True)


class Source(Protocol):
    def open(self, measure: bool) -> AbstractContextManager[LayerSupply]:
        """Resolve the image and start making its layers available (measured too, when
        `measure`); leaving the block early stops what is still running."""
        ...


class Destination(Protocol[R]):
    @property
    def streams_layers(self) -> bool:
        """True: takes each layer as it lands; False: wants them all, measured, first."""
        ...

    def write(self, supply: LayerSupply) -> R:
        """Write the image; nothing is visible at the destination unless this returns."""
        ...


def copy(source: Source, destination: Destination[T], cache: BlobCache) -> tuple[Image, T]:
    """Copy one image from `source` to `destination`; returns the image and what the destination says."""
    def run() -> tuple[Image, T]:
        with source.open(measure=not destination.streams_layers) as supply:
            result = destination.write(supply)
            return supply.image(), result
    return repairing(cache, run)


class Progress:
    """Progress callbacks; the CLI supplies a real one."""

    def start(self, total: int, count: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def blob_done(self, digest: Digest, size: int, cached: bool) -> None: ...

    def finish(self) -> None: ...

    def say(self, message: str) -> None:
        """One line of news (a layer packed, a blob pushed); silent unless the CLI shows it."""

    def layer_ready(self, layer: Layer, compressor: str, packed: bool) -> None:
        """A layer of a build is in the cache: `packed` now, or found there from an earlier build."""
        mb = (layer.size or 0) / 1e6
        self.say(f"layer {layer.descriptor.digest.hex[:12]}: {mb:.1f} MB, "
                 f"{layer.descriptor.size / 1e6:.1f} MB {compressor}{'' if packed else ' (unchanged)'}")


def repairing(cache: BlobCache, run: Callable[[], T]) -> T:
    """Run an operation; if it finds a damaged blob in the cache, evict it and run it once more.

    The operation writes nothing before it succeeds, so running it again is safe; the
    blob is fetched (or packed) again on the second run. Damage found twice is reported.
    """
    try:
        return run()
    except CacheDamaged as e:
        cache.evict(e.digest)  # type: ignore[arg-type]
        message = f"the cache held a damaged copy of {e.digest} ({e.reason}); removed it, fetching it again"
        log.warning("%s", message)
    return run()
