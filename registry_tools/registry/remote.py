"""A repository's image or whole tree as a copy source.

For a registry destination nothing is downloaded: the destination reads each blob from
the source repository as it pushes it (a HEAD, a mount in the same registry, or the
bytes streamed through the verifying reader). For any other destination the layers
come into the verified cache first (`registry.source`).
"""
from __future__ import annotations

from typing import Sequence

from registry_tools.engine import Need
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest
from registry_tools.model.image import BlobOrigin
from registry_tools.model.platform import Choice, Platform
from registry_tools.model.tree import ManifestNode, subset
from registry_tools.registry.relay import RelayedBlobs
from registry_tools.registry.source import LayerFetch, RegistrySource
from registry_tools.registry.tree import fetch_blobs, read_tree
from registry_tools.store.layers import LocalLayers, measure_tree
from registry_tools.store.origin import CachedBlobs


class RegistryImage:
    """One image of a repository, pinned by digest (a platform chosen from an index): a copy source."""

    def __init__(self, source: RegistrySource, digest: Digest, choice: Choice):
        self.source = source
        self.digest = digest
        self.choice = choice

    def open(self, need: Need) -> LocalLayers | LayerFetch:
        image = self.source.resolve(self.digest, self.choice)
        if need is Need.RELAY:  # the destination reads each blob from here (a registry): nothing to fetch
            return LocalLayers(image, self.source.store, origin=RelayedBlobs(self.source))
        return LayerFetch(self.source, image, measure=need is Need.MEASURED)


class RegistryTree:
    """The tree a tag or digest of a repository names: an index and everything under it."""

    def __init__(self, source: RegistrySource, tag: str | None, digest: Digest | None):
        self.source = source
        self.tag = tag
        self._digest = digest

    def digest(self) -> Digest:
        if self._digest is None:
            self._digest = self.source.resolve_tag(self.tag or "latest")
        return self._digest

    def read(self, platforms: Sequence[Platform], shallow: bool = False) -> ManifestNode:
        tree = read_tree(self.source, mf.Descriptor("", self.digest(), 0), shallow=shallow)
        return subset(tree, list(platforms)) if platforms else tree

    def blobs(self, tree: ManifestNode, need: Need) -> BlobOrigin:
        if need is Need.RELAY:
            return RelayedBlobs(self.source)
        fetch_blobs(self.source, tree)
        if need is Need.MEASURED:
            measure_tree(tree, self.source.store, self.source.cancel)
        return CachedBlobs(self.source.store.cache)
