"""Layers made locally and kept in the cache: packed, compressed, assembled into an image.

A layer blob is written to the cache's temporary directory through a Compressor (which
hashes both sides) and renamed into place under its digest; an index keyed by its
inputs lets the next build (or the next push of the same docker-archive) find it
without doing the work again. `LocalLayers` is the layer supply of an image whose blobs
are all in the cache already.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Iterator

from registry_tools.cancel import Cancel
from registry_tools.model import manifest as mf
from registry_tools.model.compression import Compressor
from registry_tools.model.manifest import canonical_json
from registry_tools.model.digest import Digest
from registry_tools.model.image import BlobOrigin, Image, Layer
from registry_tools.model.tree import ManifestNode, image_of, is_image
from registry_tools.store.blobs import BlobStore
from registry_tools.store.cache import BlobCache
from registry_tools.store.origin import CachedBlobs

MEDIA_TYPES = {"gz": mf.OCI_LAYER_GZIP, "zstd": mf.OCI_LAYER_ZSTD, "none": mf.OCI_LAYER}
CACHE_FORMAT = 1  # bump when packing changes, so old cache entries are not reused


def known_layer(cache: BlobCache, key: str) -> Layer | None:
    """The layer an earlier run made from the same inputs, if its blob is still here."""
    known = cache.layer_index(key)
    if not known:
        return None
    desc = mf.Descriptor(known["mediaType"], Digest.parse(known["digest"]), known["size"])
    if not cache.has(desc.digest, desc.size):
        return None
    cache.touch(desc.digest)
    return Layer(desc, Digest.parse(known["diff_id"]), known["uncompressed"])


def make_layer(cache: BlobCache, key: str, compressor: str, fill: Callable[[Callable[[bytes], None]], object]) -> Layer:
    """A layer blob written by `fill` (uncompressed tar bytes), compressed into the cache, indexed by `key`."""
    fd, tmp = tempfile.mkstemp(dir=cache.root / "tmp", prefix="layer.")
    try:
        with os.fdopen(fd, "wb") as f:
            c = Compressor(compressor, f.write)
            fill(c.write)
            c.finish()
        digest = Digest("sha256", c.blob.hexdigest())
        diff_id = Digest("sha256", c.diff.hexdigest())
        os.chmod(tmp, 0o444)
        os.replace(tmp, cache.path(digest))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    media_type = MEDIA_TYPES[compressor]
    cache.put_meta(digest, {"diff_id": str(diff_id), "size": c.size, "compression": compressor})
    cache.put_layer_index(key, {"digest": str(digest), "size": c.blob_size, "diff_id": str(diff_id),
                                "uncompressed": c.size, "mediaType": media_type})
    return Layer(mf.Descriptor(media_type, digest, c.blob_size), diff_id, c.size)


def compress_layer(layer: Layer, compressor: str, store: BlobStore) -> Layer:
    """An uncompressed layer blob (from a docker-archive) compressed as ours are; cached by diff_id.

    The blob is read through the verified store, so a damaged copy raises CacheDamaged.
    """
    if compressor == "none" or layer.descriptor.media_type != mf.OCI_LAYER:
        return layer
    key = f"recompress-{CACHE_FORMAT}-{layer.diff_id.hex}-{compressor}"
    known = known_layer(store.cache, key)
    if known is not None:
        return known

    def fill(write: Callable[[bytes], None]) -> None:
        store.copy_verified(layer.descriptor, write, f"layer {layer.diff_id}")
    return make_layer(store.cache, key, compressor, fill)


def assemble(config: dict[str, Any], config_raw: bytes, layers: list[Layer], platform: dict[str, Any] | None,
             cache: BlobCache, annotations: dict[str, str] | None = None) -> Image:
    """An OCI manifest for a config and layers that are in the cache (both stored there too)."""
    config_desc = mf.Descriptor(mf.OCI_CONFIG, Digest.of_bytes(config_raw), len(config_raw))
    cache.put_bytes(config_desc.digest, config_raw)
    manifest = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": config_desc.to_json(),
                "layers": [layer.descriptor.to_json() for layer in layers]}
    if annotations:
        manifest["annotations"] = dict(sorted(annotations.items()))
    raw = canonical_json(manifest)
    doc = mf.ImageManifest(raw, mf.OCI_MANIFEST, config_desc, tuple(layer.descriptor for layer in layers))
    desc = mf.Descriptor(mf.OCI_MANIFEST, Digest.of_bytes(raw), len(raw), platform=platform)
    cache.put_bytes(desc.digest, raw)
    return Image(doc, desc, config_raw, config, layers)


def measure_tree(tree: ManifestNode, store: BlobStore, cancel: Cancel | None = None) -> None:
    """Every image layer of a tree whose blobs are in the cache checked against its diff_id (and
    measured, once: the facts are remembered). Artifacts and attestations carry no layer tars."""
    for node in [*tree.below(), tree]:
        if not is_image(node):
            continue
        config = node.blobs[0]
        image = image_of(node, store.cache.read_small(config, f"config {config.digest}"))
        n = len(image.layers)
        for i, layer in enumerate(image.layers):
            store.measure(layer, f"{node.digest} layer {i + 1}/{n} {layer.descriptor.digest}", cancel)


class LocalLayers:
    """The layer supply of an image whose layers need no waiting: blobs in the cache already (a
    layout, an archive), or left where they are for a registry destination to read from `origin`."""

    def __init__(self, image: Image, store: BlobStore, cancel: Cancel | None = None,
                 origin: BlobOrigin | None = None):
        self._image = image
        self._store = store
        self._cancel = cancel
        self._origin = origin or CachedBlobs(store.cache)

    @property
    def origin(self) -> BlobOrigin:
        return self._origin

    def image(self) -> Image:
        return self._image

    def count(self) -> int:
        return len(self._image.layers)

    def layer(self, i: int) -> Layer:
        return self._store.measured(self._image.layers[i])

    def ready(self) -> Iterator[int]:
        return iter(range(len(self._image.layers)))

    def early(self, i: int) -> None:
        return None  # everything is here already

    def measured(self) -> list[Layer]:
        n = len(self._image.layers)
        return [self._store.measure(layer, f"layer {i + 1}/{n} {layer.descriptor.digest}", self._cancel)
                for i, layer in enumerate(self._image.layers)]

    def __enter__(self) -> "LocalLayers":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

