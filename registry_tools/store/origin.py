"""Where a destination reads blobs from: the verified cache, or several places at once.

A destination that writes an image asks its supply's `origin` for each blob. Blobs a
source put in the cache are read from there (`CachedBlobs`). An image edited on its way
(a new config, appended layers, another base) is made of blobs from several places: the
cache holds what was made here, and each image it was made from keeps its own origin for
the rest (`Origins`), so an untouched layer goes from one registry to the other as it is.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from registry_tools.errors import ManifestError
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest, Readable
from registry_tools.model.image import BlobOrigin
from registry_tools.store.cache import BlobCache


def read_small(origin: BlobOrigin, desc: mf.Descriptor) -> bytes:
    """A small blob (a config) in memory, verified as it is read from wherever it is."""
    if desc.size > mf.MAX_MANIFEST_SIZE:
        raise ManifestError(f"blob {desc.digest}: {desc.size} bytes is too large for a config")
    parts = []
    with origin.open(desc) as reader:
        while chunk := reader.read(1 << 16):
            parts.append(chunk)
    return b"".join(parts)


class CachedBlobs:
    """Blobs from the verified cache (what a source put there)."""

    def __init__(self, cache: BlobCache):
        self.cache = cache

    @contextmanager
    def open(self, desc: mf.Descriptor) -> Iterator[Readable]:
        with self.cache.open(desc) as reader:
            yield reader

    def local(self, desc: mf.Descriptor) -> Path:
        with self.cache.open(desc) as reader:
            reader.drain()  # every byte checked before any range of it is sent
        return self.cache.path(desc.digest)

    def mounts(self, desc: mf.Descriptor, domain: str) -> list[str]:
        return [repo for d, repo in self.cache.sources(desc.digest) if d == domain]


class Origins:
    """Blobs from the cache where it has them, else from the origin of the image that named them."""

    def __init__(self, cache: BlobCache, parts: Iterable[tuple[Iterable[Digest], BlobOrigin]] = ()):
        self.cached = CachedBlobs(cache)
        self._by_digest: dict[Digest, BlobOrigin] = {}
        for digests, origin in parts:
            self.add(digests, origin)

    def add(self, digests: Iterable[Digest], origin: BlobOrigin) -> None:
        """`origin` serves these blobs (the first origin named for a digest keeps it)."""
        for d in digests:
            self._by_digest.setdefault(d, origin)

    def _for(self, desc: mf.Descriptor) -> BlobOrigin:
        if self.cached.cache.has(desc.digest, desc.size):
            return self.cached
        return self._by_digest.get(desc.digest, self.cached)

    def open(self, desc: mf.Descriptor) -> AbstractContextManager[Readable]:
        return self._for(desc).open(desc)

    def local(self, desc: mf.Descriptor) -> Path:
        return self._for(desc).local(desc)

    def mounts(self, desc: mf.Descriptor, domain: str) -> list[str]:
        """The repositories the blob's own origin knows, then those the cache recorded."""
        owner = self._by_digest.get(desc.digest)
        out = list(owner.mounts(desc, domain)) if owner is not None else []
        return out + [r for r in self.cached.mounts(desc, domain) if r not in out]
