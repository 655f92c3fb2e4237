"""Where a push takes a blob's bytes from: the cache, or another registry, streamed.

A destination repository reads each blob it must upload from a `BlobOrigin`. The cache
is the origin of pushes from archives, layouts and builds; a source repository is the
origin of a copy between registries, whose blobs go from one registry to the other
unchanged (never recompressed, never stored on the way) through the verifying reader:
a blob whose bytes are not what its digest names fails before its upload is committed.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Iterator, Protocol

from registry_tools.engine import Progress
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Readable, VerifyingReader
from registry_tools.registry.blob import BlobStream
from registry_tools.registry.source import RegistrySource
from registry_tools.store.cache import BlobCache


class BlobOrigin(Protocol):
    def open(self, desc: mf.Descriptor) -> AbstractContextManager[Readable]:
        """The blob's bytes from the start, verified (size and digest) by the time they end."""
        ...

    def local(self, desc: mf.Descriptor) -> Path:
        """A verified copy on disk (for the chunked upload, which sends ranges)."""
        ...

    def mounts(self, desc: mf.Descriptor, domain: str) -> list[str]:
        """Repositories of registry `domain` known to hold the blob (to mount it from)."""
        ...


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


class _Counting:
    def __init__(self, inner: Readable, progress: Progress):
        self._inner = inner
        self._progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        self._progress.advance(len(data))
        return data


class RelayedBlobs:
    """Blobs streamed from a source repository, verified as they pass."""

    def __init__(self, source: RegistrySource, progress: Progress | None = None):
        self.source = source
        self.progress = progress or source.progress

    def _what(self, desc: mf.Descriptor) -> str:
        return f"blob {self.source.registry.domain}/{self.source.repo}@{desc.digest}"

    @contextmanager
    def open(self, desc: mf.Descriptor) -> Iterator[Readable]:
        with BlobStream(self.source.registry, self.source.repo, desc.digest, desc.size) as stream:
            yield _Counting(VerifyingReader(stream, desc.digest, desc.size, self._what(desc)), self.progress)

    def local(self, desc: mf.Descriptor) -> Path:
        self.source.fetch_blob(desc, self._what(desc))
        return CachedBlobs(self.source.store.cache).local(desc)

    def mounts(self, desc: mf.Descriptor, domain: str) -> list[str]:
        own = [self.source.repo] if self.source.registry.domain == domain else []
        return own + CachedBlobs(self.source.store.cache).mounts(desc, domain)
