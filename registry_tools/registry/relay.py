"""Blobs streamed from a source repository to a destination, verified as they pass.

The origin of a copy between registries: each blob goes from one registry to the other
unchanged (never recompressed, never stored on the way) through the verifying reader, so
a blob whose bytes are not what its digest names fails before its upload is committed.
A blob in the same registry is mounted from the source repository instead.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from registry_tools.model import manifest as mf
from registry_tools.model.digest import Readable, VerifyingReader
from registry_tools.registry.blob import BlobStream
from registry_tools.registry.source import RegistrySource
from registry_tools.store.origin import CachedBlobs


class RelayedBlobs:
    """Blobs streamed from a source repository, verified as they pass (the sink counts them)."""

    def __init__(self, source: RegistrySource):
        self.source = source

    def _what(self, desc: mf.Descriptor) -> str:
        return f"blob {self.source.registry.domain}/{self.source.repo}@{desc.digest}"

    @contextmanager
    def open(self, desc: mf.Descriptor) -> Iterator[Readable]:
        with BlobStream(self.source.registry, self.source.repo, desc.digest, desc.size) as stream:
            yield VerifyingReader(stream, desc.digest, desc.size, self._what(desc))

    def local(self, desc: mf.Descriptor) -> Path:
        self.source.fetch_blob(desc, self._what(desc))
        return CachedBlobs(self.source.store.cache).local(desc)

    def mounts(self, desc: mf.Descriptor, domain: str) -> list[str]:
        own = [self.source.repo] if self.source.registry.domain == domain else []
        return own + CachedBlobs(self.source.store.cache).mounts(desc, domain)
