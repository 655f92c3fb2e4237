"""A registry repository as an image source: manifests and blobs, verified into the cache.

Manifests are fetched by digest and hashed here; blobs stream through a VerifyingReader
into the cache, and only a blob that passed is stored. Layer downloads run in the
background under the operation's one transfer limit, handed out in image order.
"""
from __future__ import annotations

import logging

from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Callable, Iterator

from registry_tools.cancel import Cancel
from registry_tools.engine import Progress
from registry_tools.errors import CacheDamaged, DigestMismatch, ManifestError, NotFound, PlatformNotFound
from registry_tools.errors import RegistryToolsError
from registry_tools.model.compression import READ_SIZE
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest, ReadableFile, VerifyingReader, verify_bytes
from registry_tools.model.image import Image, Layer
from registry_tools.model.platform import Choice, Matcher, Platform, choose, choose_in_index
from registry_tools.registry.blob import BlobStream
from registry_tools.registry.client import Registry
from registry_tools.registry.ranges import PARTS, RANGES_FROM, RangedFetch
from registry_tools.registry.repository import tag_page
from registry_tools.store.blobs import BlobStore
from registry_tools.store.landing import Landing
from registry_tools.store.origin import CachedBlobs
from registry_tools.workers import JOBS, Workers

log = logging.getLogger("registry_tools.source")
STREAM_FROM = 32 << 20  # a layer this big (compressed) is decompressed while it downloads


class RegistrySource:
    """An image in a registry repository, fetched through the cache."""

    def __init__(self, registry: Registry, repo: str, store: BlobStore, workers: Workers | None = None,
                 progress: Progress | None = None, range_parts: int = PARTS):
        """`workers`: the operation's pool and transfer limit (default: one of its own, on the registry's
        cancellation); `range_parts`: the parallel ranges of a blob of RANGES_FROM bytes or more."""
        self.registry = registry
        self.repo = repo
        self.store = store
        self.workers = workers or Workers(JOBS, registry.cancel)
        self.progress = progress or Progress()
        self.ranges = RangedFetch(registry, repo, self.workers, range_parts)

    @property
    def cancel(self) -> Cancel:
        return self.registry.cancel

    def _where(self, digest: Digest) -> str:
        return f"{self.registry.domain}/{self.repo}@{digest}"

    def manifest_bytes(self, digest: Digest, size: int | None = None) -> tuple[bytes, str]:
        """A manifest by digest, verified against it; served from the cache when it is there and intact."""
        cache = self.store.cache
        if cache.has(digest, size):
            try:
                return cache.read_small(mf.Descriptor("", digest, cache.path(digest).stat().st_size)), ""
            except (CacheDamaged, OSError):
                cache.evict(digest)
        raw, content_type = self.registry.get_manifest(self.repo, str(digest))
        verify_bytes(f"manifest {self._where(digest)}", raw, digest, size)
        cache.put_bytes(digest, raw)
        return raw, content_type

    def resolve_tag(self, tag: str, cheap: bool = False) -> Digest:
        """The digest a tag points to: the sha256 of the manifest a GET of the tag returns (cached
        under it, so the fetch by digest that follows is local). A registry's `Docker-Content-Digest`
        for a tag is not trusted: registries have answered with another manifest's (Docker Hub once
        gave a platform's for a manifest list). `cheap`: a HEAD where only a comparison follows
        (Docker Hub counts GETs, not HEADs, against its rate limit), a GET where it says nothing."""
        # The HEAD is free on Docker Hub and tells the rate-limit budget before the GET that counts.
        claimed, _, _ = self.registry.head_manifest(self.repo, tag)
        if cheap and claimed is not None:
            return claimed
        try:
            raw, _ = self.registry.get_manifest(self.repo, tag)
        except NotFound:
            # Say whether the repository or only the tag is missing, and what exists.
            tags = tag_page(self.registry, self.repo, f"/v2/{self.repo}/tags/list?n=1000")
            listing = ", ".join(sorted(tags)[:20]) + (" …" if len(tags) > 20 else "") if tags else "none"
            raise NotFound(f"{self.registry.domain}/{self.repo}: no tag {tag!r}; its tags: {listing}", 404,
                           "MANIFEST_UNKNOWN") from None
        digest = Digest.of_bytes(raw)
        if claimed is not None and claimed != digest:
            log.warning("%s/%s:%s: the registry says the tag names %s, but its bytes are %s; using the bytes",
                        self.registry.domain, self.repo, tag, claimed, digest)
        self.store.cache.put_bytes(digest, raw)
        return digest

    def _choose(self, digest: Digest, choice: Choice) -> tuple[mf.ImageManifest, mf.Descriptor, Digest | None]:
        raw, ctype = self.manifest_bytes(digest)
        doc = mf.parse(raw, ctype, where=f"manifest {self._where(digest)}")
        if isinstance(doc, mf.ImageManifest):
            return doc, mf.Descriptor(doc.media_type, digest, len(raw)), None
        chosen = doc.manifests[choose_in_index(doc.choice_view(), choice.wanted, cross_arch=choice.cross_arch)]
        raw, ctype = self.manifest_bytes(chosen.digest, chosen.size)
        child = mf.parse(raw, ctype or chosen.media_type, where=f"manifest {self._where(chosen.digest)}")
        if isinstance(child, mf.Index):
            raise ManifestError(f"{self._where(chosen.digest)}: nested indexes are not supported")
        return child, chosen, digest

    def resolve(self, digest: Digest, choice: Choice) -> Image:
        """Manifest (choosing from an index), config and layer list for one platform.

        A single-platform image is taken whatever the default platform says (as skopeo
        does); a platform the user asked for explicitly must match it.
        """
        wanted = choice.wanted
        doc, desc, index_digest = self._choose(digest, choice)
        if doc.config.media_type not in (mf.OCI_CONFIG, mf.DOCKER_CONFIG, ""):
            art = mf.load_json(doc.raw, f"manifest {self._where(desc.digest)}").get("artifactType")
            kind = art if isinstance(art, str) and art else doc.config.media_type
            raise ManifestError(f"{self._where(desc.digest)} is not an image but an artifact of type {kind}: "
                                "list what refers to an image with `registry-tools referrers`")
        config_raw = self.blob_bytes(doc.config, f"config of {self._where(desc.digest)}")
        config = mf.parse_config(config_raw, f"config {doc.config.digest}")
        have = Platform(str(config.get("os") or ""), str(config.get("architecture") or ""),
                        str(config.get("variant") or ""))
        if index_digest is not None and desc.platform is None:
            # An index entry without a platform: the config must show it is the right one.
            same_arch = have.os == wanted.os and have.architecture == wanted.architecture
            if not Matcher(wanted).match(have) and not same_arch:
                raise ManifestError(f"{self._where(desc.digest)}: the index entry has no platform and its config "
                                    f"says {have}, not {wanted}")
        ids = mf.diff_ids(config, f"config {doc.config.digest}")
        if len(ids) != len(doc.layers):
            raise ManifestError(f"{self._where(desc.digest)}: manifest lists {len(doc.layers)} layers but the "
                                f"config has {len(ids)} diff_ids")
        for i, layer in enumerate(doc.layers):
            if layer.media_type and not mf.is_layer_type(layer.media_type):
                raise ManifestError(f"{self._where(desc.digest)}: layer {i} has media type {layer.media_type}, "
                                    "not an image layer")
        if index_digest is None and choice.explicit:
            try:  # the same rules as choosing from an index, applied to the one image there is
                choose([{"platform": have.to_json()}], wanted, cross_arch=choice.cross_arch)
            except PlatformNotFound as e:
                raise PlatformNotFound(e.wanted, e.offered, single=True) from None
        layers = [Layer(d, ids[i]) for i, d in enumerate(doc.layers)]
        return Image(doc, desc, config_raw, config, layers, index_digest=index_digest)

    def blob_bytes(self, desc: mf.Descriptor, what: str) -> bytes:
        """A small blob (a config) in memory, verified; refuses anything over the manifest limit."""
        if desc.size > mf.MAX_MANIFEST_SIZE:
            raise ManifestError(f"{what}: {desc.size} bytes is too large for a config")
        self.fetch_blob(desc, what)
        try:
            return self.store.cache.read_small(desc, what)
        except CacheDamaged:
            self.store.cache.evict(desc.digest)
        self.fetch_blob(desc, what)
        return self.store.cache.read_small(desc, what)

    def fetch_blob(self, desc: mf.Descriptor, what: str, cancel: Cancel | None = None,
                   landing: Landing | None = None) -> bool:
        """Make sure a verified copy of the blob is in the cache; True if it was downloaded.
        With a `landing`, a reader may follow the blob while it arrives."""
        cache = self.store.cache
        if cache.has(desc.digest, desc.size):
            cache.touch(desc.digest)
            self.progress.advance(desc.size)
            self.progress.blob_done(desc.digest, desc.size, cached=True)
            return False
        if self.ranges.parts > 1 and desc.size >= RANGES_FROM:
            with cache.writer(desc.digest) as f:
                self.ranges.into(desc, what, f, landing.tee(f, written=True) if landing else None,
                                 self.progress.advance, cancel or self.cancel)
        else:
            with self.workers.transfer(), BlobStream(self.registry, self.repo, desc.digest, desc.size) as stream, \
                    cache.writer(desc.digest) as f:
                reader = VerifyingReader(stream, desc.digest, desc.size, what, tee=landing.tee(f) if landing else f)
                while chunk := reader.read(READ_SIZE):
                    self.progress.advance(len(chunk))
                    if cancel is not None:
                        cancel.check()
        cache.add_source(desc.digest, self.registry.domain, self.repo)
        self.progress.blob_done(desc.digest, desc.size, cached=False)
        return True

    def size_record(self, desc: mf.Descriptor) -> int | None:
        """The uncompressed size a gzip layer records in its last four bytes, asked for with a
        Range request before the download; a hint (None where the registry will not say),
        checked when the layer is written."""
        if mf.layer_compression(desc.media_type) != "gzip" or desc.size < 18:
            return None
        path = f"/v2/{self.repo}/blobs/{desc.digest}"
        try:
            resp = self.registry.request("GET", self.repo, path, headers={"Range": f"bytes={desc.size - 4}-"},
                                         kind="blob-tail", limit=4096)
        except RegistryToolsError:
            return None
        if resp.status_code != 206 or len(resp.content) != 4:
            return None
        return int.from_bytes(resp.content, "little")

    def fetch_layers(self, image: Image) -> None:
        """Download (concurrently) and verify every layer, measuring each one's tar."""
        with LayerFetch(self, image, measure=True) as fetch:
            image.layers = fetch.measured()


class LayerFetch:
    """Layer downloads running in the background, handed out in image order as they land.

    Used as a context manager: leaving it early (an error, Ctrl-C) cancels what is still
    running without waiting for it.
    """

    def __init__(self, source: RegistrySource, image: Image, measure: bool):
        self.source = source
        self.image_ = image
        self.cancel = source.cancel.child()  # stops with the session, or alone when the write fails
        layers = image.layers
        source.progress.start(sum(layer.descriptor.size for layer in layers), len(layers))
        self._group = source.workers.group()
        self._futures: dict[Digest, Future[Layer]] = {}
        # A layer that dominates the image is read while it downloads (when its size is on
        # record): nothing else could keep the other core busy meanwhile. Layers of similar
        # sizes overlap one's download with another's decompression already.
        self._landings: dict[Digest, Landing] = {}
        total = sum(layer.descriptor.size for layer in layers)
        for layer in layers:
            d = layer.descriptor
            dominant = d.size >= STREAM_FROM and d.size * 2 >= total
            if not measure and dominant and not source.store.cache.has(d.digest, d.size):
                self._landings.setdefault(d.digest, Landing(self.cancel))
        for i, layer in enumerate(layers):
            if layer.descriptor.digest not in self._futures:
                self._futures[layer.descriptor.digest] = self._group.submit(self._one, i, measure)

    def image(self) -> Image:
        return self.image_

    def count(self) -> int:
        return len(self.image_.layers)

    @property
    def origin(self) -> CachedBlobs:
        return CachedBlobs(self.source.store.cache)

    def _what(self, i: int) -> str:
        return f"layer {i + 1}/{len(self.image_.layers)} {self.image_.layers[i].descriptor.digest}"

    def _one(self, i: int, measure: bool) -> Layer:
        layer = self.image_.layers[i]
        self.cancel.check()
        landing = self._landings.get(layer.descriptor.digest)
        try:
            self.source.fetch_blob(layer.descriptor, self._what(i), self.cancel, landing)
        except BaseException as e:
            if landing is not None:
                landing.fail(e)
            raise
        if landing is not None:
            landing.finish()
        if measure:
            return self.source.store.measure(layer, self._what(i), self.cancel)
        return self.source.store.measured(layer)

    def layer(self, i: int) -> Layer:
        """Layer i once its blob is in the cache (re-raises its download error)."""
        layer = self.image_.layers[i]
        got = self._group.wait_for(self._futures[layer.descriptor.digest])  # another's failure: at once
        if got.diff_id != layer.diff_id:
            # The same compressed blob listed twice with different diff_ids cannot both be right.
            raise DigestMismatch(f"layer {i + 1} diff_id", str(layer.diff_id), str(got.diff_id))
        return got

    def early(self, i: int) -> tuple[Layer, int, Callable[[], ReadableFile]] | None:
        """Layer i while it still downloads: the layer, the size its gzip trailer records, and a
        reader that follows the download (None: wait for layer(i) instead)."""
        layer = self.image_.layers[i]
        landing = self._landings.get(layer.descriptor.digest)
        if landing is None or self._futures[layer.descriptor.digest].done():
            return None
        planned = self.source.size_record(layer.descriptor)
        if planned is None:
            return None
        return layer, planned, landing.reader

    def ready(self) -> Iterator[int]:
        """Layer indexes in the order their downloads finish."""
        by_digest: dict[Digest, list[int]] = {}
        for i, layer in enumerate(self.image_.layers):
            by_digest.setdefault(layer.descriptor.digest, []).append(i)
        pending = {f: by_digest[d] for d, f in self._futures.items()}
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for f in done:
                for i in pending.pop(f):
                    self.layer(i)
                    yield i

    def measured(self) -> list[Layer]:
        """Every layer, measured (in the pool when the fetch measured as it went)."""
        layers = [self.layer(i) for i in range(len(self.image_.layers))]
        return [self.source.store.measure(layer, self._what(i), self.cancel) for i, layer in enumerate(layers)]

    def __enter__(self) -> "LayerFetch":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.cancel.set()
            self._group.cancel_waiting()
        else:
            self._group.join()
            self.source.progress.finish()
        for landing in self._landings.values():
            landing.close()
