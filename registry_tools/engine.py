"""The copy engine: any source to any destination, one image or a whole tree, and what every
copy shares.

Every operation is a copy from a source (a registry, an OCI layout or oci-archive, a
docker-archive, the builder) to a destination (a registry, an archive, a layout, podman's
storage, a stream, a hash), through optional transforms (an edited config, layers added,
the layers flattened, another base). A destination says what it needs of the layers
(`Need`): a registry reads each blob from where it already is (a HEAD, a mount, or bytes
streamed from the source registry), an archive wants them in the verified cache. `copy`
moves one image, `copy_tree` an index and everything it names; both repair a damaged
cache entry once, here and nowhere else, and both ask a transform for the blobs it does
not touch only where the destination lacks them. How a copy reports progress is here too.
"""
from __future__ import annotations

import enum
import logging
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Callable, Generic, Protocol, Sequence, TypeVar

from registry_tools.errors import CacheDamaged
from registry_tools.model.digest import Digest
from registry_tools.model.image import BlobOrigin, Image, Layer, LayerSupply
from registry_tools.model.platform import Platform
from registry_tools.model.tree import ManifestNode
from registry_tools.store.cache import BlobCache
from registry_tools.words import size

log = logging.getLogger("registry_tools.engine")

T = TypeVar("T")
R = TypeVar("R", covariant=True)


class Need(enum.IntEnum):
    """What a destination needs of an image's layers before it writes them."""

    RELAY = 0  # nothing: it reads each blob from the supply's origin (a registry HEADs, mounts or streams it)
    STREAM = 1  # each in the verified cache as it lands (a docker-archive decompresses them as they come)
    MEASURED = 2  # all in the cache, diff_id checked, before the first byte is written (layouts, export)


class Source(Protocol):
    def open(self, need: Need) -> AbstractContextManager[LayerSupply]:
        """Resolve the image and start making its layers available as `need` says; leaving the
        block early stops what is still running."""
        ...


class TreeSource(Protocol):
    """An index (or a single image) and everything it names, read whole."""

    def digest(self) -> Digest:
        """What the source names (a tag resolved), before anything else is read."""
        ...

    def read(self, platforms: Sequence[Platform], shallow: bool = False) -> ManifestNode:
        """Every manifest, verified (blobs not yet); with `platforms`, a new index of exactly those;
        `shallow`: the top manifest alone, the entries under it known by their descriptors."""
        ...

    def blobs(self, tree: ManifestNode, need: Need) -> BlobOrigin:
        """Where the tree's blobs are read from: left where they are (RELAY), or each verified into
        the cache (and every image layer's diff_id checked, MEASURED)."""
        ...


class HeldTree:
    """A tree already in hand (built, or edited) as a tree source; its blobs read from `origin`."""

    def __init__(self, tree: ManifestNode, origin: BlobOrigin):
        self.tree = tree
        self.origin = origin

    def digest(self) -> Digest:
        return self.tree.digest

    def read(self, platforms: Sequence[Platform] = (), shallow: bool = False) -> ManifestNode:
        return self.tree

    def blobs(self, tree: ManifestNode, need: Need) -> BlobOrigin:
        return self.origin


class Destination(Protocol[R]):
    @property
    def need(self) -> Need:
        ...

    def holds(self, digest: Digest) -> R | None:
        """What to report if the destination names `digest` already (one HEAD per tag for a
        registry), else None: a file destination is always written."""
        ...

    def write(self, supply: LayerSupply) -> R:
        """Write one image; nothing is visible at the destination unless this returns."""
        ...

    def write_tree(self, tree: ManifestNode, blobs: BlobOrigin) -> R:
        """Write a tree: every blob, the manifests children before parents, the top one named."""
        ...


class Transform(Protocol):
    """An edit of an image on its way: lazy, so the blobs it does not touch are never read."""

    needs_content: bool  # it reads the layers' bytes (flatten): they come into the cache first

    def __call__(self, supply: LayerSupply, stack: ExitStack, need: Need) -> LayerSupply:
        """The edited image's supply; what it opens (another image's layers, as `need` says the
        destination needs them) it leaves to `stack`."""
        ...


def _need(destination: Destination[object], transforms: Sequence[Transform]) -> Need:
    if any(t.needs_content for t in transforms):
        return max(destination.need, Need.MEASURED)
    return destination.need


def copy(source: Source, destination: Destination[T], cache: BlobCache,
         transforms: Sequence[Transform] = ()) -> tuple[Image, T]:
    """Copy one image from `source` through `transforms` to `destination`; returns the image
    written and what the destination says."""
    need = _need(destination, transforms)

    def run() -> tuple[Image, T]:
        with ExitStack() as stack:
            supply = stack.enter_context(source.open(need))
            for transform in transforms:
                supply = transform(supply, stack, need)
            result = destination.write(supply)
            return supply.image(), result
    return repairing(cache, run)


@dataclass
class TreeCopy(Generic[T]):
    """What a tree copy did: the tree written (None when the destination held it already)."""

    source_digest: Digest
    tree: ManifestNode | None
    result: T
    up_to_date: bool


TreeEdit = Callable[[ManifestNode, TreeSource, BlobOrigin, ExitStack, Need], tuple[ManifestNode, BlobOrigin]]


def copy_tree(source: TreeSource, destination: Destination[T], cache: BlobCache,
              platforms: Sequence[Platform] = (), edit: TreeEdit | None = None,
              need: Need | None = None) -> TreeCopy[T]:
    """Copy the tree `source` names (or the new index of `platforms`), edited by `edit` (each image
    through its transforms: transforms.each_image), to `destination`. What the destination holds
    already costs one HEAD per tag and nothing is read."""
    need = destination.need if need is None else max(need, destination.need)

    def run() -> TreeCopy[T]:
        digest = source.digest()
        if not platforms and edit is None and (there := destination.holds(digest)) is not None:
            return TreeCopy(digest, None, there, True)
        tree = source.read(platforms)
        if platforms and edit is None and (there := destination.holds(tree.digest)) is not None:
            return TreeCopy(digest, tree, there, True)
        blobs = source.blobs(tree, need)
        with ExitStack() as stack:
            if edit is not None:
                tree, blobs = edit(tree, source, blobs, stack, need)
            return TreeCopy(digest, tree, destination.write_tree(tree, blobs), False)
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
        self.say(f"layer {layer.descriptor.digest.hex[:12]}: {size(layer.size or 0)}, "
                 f"{size(layer.descriptor.size)} {compressor}{'' if packed else ' (unchanged)'}")


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
