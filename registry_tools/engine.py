"""The copy: resolve an image at a source, make its blobs available verified, hand them to a sink.

Every operation is a copy from a source to a sink. Verification, caching and concurrency
live here once; sources and sinks only speak their own format or protocol.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from registry_tools.model import manifest as mf
from registry_tools.store.cache import BlobCache
from registry_tools.registry.client import Registry
from registry_tools.model.digest import Digest, HashingReader, verify_bytes
from registry_tools.errors import DigestMismatch, Interrupted, ManifestError, NotFound, PlatformNotFound, SizeMismatch
from registry_tools.formats.compression import READ_SIZE, close_quietly, decompressed, size_hint, sniff_file
from registry_tools.model.platform import Matcher, Platform, choose, choose_in_index

log = logging.getLogger("registry_tools.copy")

DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True)
class Layer:
    descriptor: mf.Descriptor
    diff_id: Digest
    size: int  # uncompressed bytes; -1 while unknown
    exact: bool = True  # False: `size` is the format's own record, still to be confirmed
    verified: bool = True  # False: the diff_id is still to be checked while decompressing


class SizeHintWrong(Exception):
    """A layer's recorded uncompressed size was not its real size; the exact path must be taken."""


@dataclass
class ResolvedImage:
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
        return Platform(str(c.get("os", "")), str(c.get("architecture", "")), str(c.get("variant", "") or ""))

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


class Progress:
    """Progress callbacks; the CLI supplies a real one."""

    def start(self, total: int, count: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def blob_done(self, digest: Digest, size: int, cached: bool) -> None: ...

    def finish(self) -> None: ...

    def say(self, message: str) -> None:
        """One line of news (a layer packed, a blob pushed); silent unless the CLI shows it."""


def check_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Interrupted("cancelled")


class BlobStore:
    """Verified blobs on local disk: the cache is the single staging area for every sink."""

    def __init__(self, cache: BlobCache):
        self.cache = cache

    def open_verified(self, desc: mf.Descriptor, hashing: bool = True) -> HashingReader:
        """Read a cached blob; call `.verify(...)` (or use `copy_verified`) once drained."""
        return HashingReader(open(self.cache.path(desc.digest), "rb"), hashing=hashing)

    def copy_verified(self, desc: mf.Descriptor, write: Callable[[bytes], object], what: str) -> None:
        reader = self.open_verified(desc)
        try:
            while chunk := reader.read(READ_SIZE):
                write(chunk)
            reader.verify(what, desc.digest, desc.size)
        finally:
            close_quietly(reader._raw)  # noqa: SLF001

    def link_verified(self, desc: mf.Descriptor, dest: "os.PathLike[str]") -> bool:
        """Hard-link a cached blob to `dest` after checking it; False where links cannot be made.

        Cached blobs are read-only and re-checked whenever they are read, so sharing the
        inode costs no safety and saves copying every byte.
        """
        src = self.cache.path(desc.digest)
        reader = self.open_verified(desc)
        try:
            reader.drain()
            reader.verify(f"blob {desc.digest}", desc.digest, desc.size)
        finally:
            close_quietly(reader._raw)  # noqa: SLF001
        try:
            os.link(src, dest)
        except OSError:
            return False
        return True

    def copy_uncompressed(self, layer: Layer, write: Callable[[bytes], object], what: str) -> None:
        """Stream a layer's tar, checking its size and, unless already known good, its diff_id.

        A layer whose diff_id was verified before is re-checked against its compressed
        digest instead (the cheaper hash), so a damaged cache never goes unnoticed. The
        hash runs in this thread: the callers already keep both cores busy with layers.
        """
        diff = hashlib.sha256() if not layer.verified else None
        # With the diff_id checked, hashing the compressed side again would prove nothing more.
        reader = self.open_verified(layer.descriptor, hashing=diff is None)
        n = 0
        try:
            stream, kind = decompressed(reader)
            while chunk := stream.read(READ_SIZE):
                n += len(chunk)
                if n > layer.size:
                    if not layer.exact:
                        raise SizeHintWrong(what)
                    raise SizeMismatch(f"{what} (uncompressed)", layer.size, n)
                if diff is not None:
                    diff.update(chunk)
                write(chunk)
            reader.drain()
            if n != layer.size:
                if not layer.exact:
                    raise SizeHintWrong(what)
                raise SizeMismatch(f"{what} (uncompressed)", layer.size, n)
            if diff is not None:
                actual = Digest("sha256", diff.hexdigest())
                if actual != layer.diff_id:
                    raise DigestMismatch(f"{what} uncompressed content (diff_id)", str(layer.diff_id), str(actual))
                self.cache.put_meta(layer.descriptor.digest, {"diff_id": str(actual), "size": n, "compression": kind})
            else:
                reader.verify(what, layer.descriptor.digest, layer.descriptor.size)
        finally:
            close_quietly(reader._raw)  # noqa: SLF001

    def known_layer(self, desc: mf.Descriptor, diff_id: Digest) -> Layer | None:
        """The layer with its exact size, if an earlier run verified it."""
        facts = self.cache.meta(desc.digest)
        if facts and facts.get("diff_id") == str(diff_id) and isinstance(facts.get("size"), int):
            return Layer(desc, diff_id, facts["size"])
        return None

    def hinted_layer(self, desc: mf.Descriptor, diff_id: Digest) -> Layer:
        """The layer with an exact size from earlier runs, else with the size its format records."""
        known = self.known_layer(desc, diff_id)
        if known is not None:
            return known
        path = str(self.cache.path(desc.digest))
        hint = size_hint(path, sniff_file(path))
        return Layer(desc, diff_id, hint if hint is not None else -1, exact=False, verified=False)

    def layer_facts(self, desc: mf.Descriptor, expected_diff_id: Digest, what: str,
                    cancel: threading.Event | None = None) -> Layer:
        """diff_id and uncompressed size of a cached layer, computed once and remembered."""
        known = self.known_layer(desc, expected_diff_id)
        if known is not None:
            return known
        reader = self.open_verified(desc)
        h = hashlib.sha256()
        n = 0
        try:
            stream, kind = decompressed(reader)
            while chunk := stream.read(READ_SIZE):
                h.update(chunk)
                n += len(chunk)
                check_cancelled(cancel)
            reader.drain()
        except (OSError, EOFError, ValueError) as e:
            raise ManifestError(f"{what}: cannot decompress: {e}") from None
        except Exception as e:  # zstandard raises its own error type
            raise ManifestError(f"{what}: cannot decompress: {e}") from None
        finally:
            close_quietly(reader._raw)  # noqa: SLF001
        reader.verify(what, desc.digest, desc.size)
        actual = Digest("sha256", h.hexdigest())
        if actual != expected_diff_id:
            raise DigestMismatch(f"{what} uncompressed content (diff_id)", str(expected_diff_id), str(actual))
        self.cache.put_meta(desc.digest, {"diff_id": str(actual), "size": n, "compression": kind})
        return Layer(desc, actual, n)


class RegistrySource:
    """An image in a registry repository, fetched through the cache."""

    def __init__(self, registry: Registry, repo: str, store: BlobStore,
                 concurrency: int = DEFAULT_CONCURRENCY, progress: Progress | None = None,
                 transfers: threading.BoundedSemaphore | None = None):
        self.registry = registry
        self.repo = repo
        self.store = store
        self.concurrency = concurrency
        self.progress = progress or Progress()
        self.transfers = transfers or threading.BoundedSemaphore(max(1, concurrency))

    def _where(self, digest: Digest) -> str:
        return f"{self.registry.domain}/{self.repo}@{digest}"

    def manifest_bytes(self, digest: Digest, size: int | None = None) -> tuple[bytes, str]:
        """A manifest by digest, verified against it; served from the cache when present."""
        cache = self.store.cache
        if cache.has(digest, size):
            raw = cache.read_bytes(digest)
            if hashlib.sha256(raw).hexdigest() == digest.hex:
                return raw, ""
        raw, content_type = self.registry.get_manifest(self.repo, str(digest))
        verify_bytes(f"manifest {self._where(digest)}", raw, digest, size)
        cache.put_bytes(digest, raw)
        return raw, content_type

    def resolve_tag(self, tag: str) -> Digest:
        """The digest a tag points to: a HEAD request where the registry answers one, else a GET.

        Docker Hub counts GETs against its rate limit, not HEADs. With a GET the bytes are
        hashed here and cached under their digest, so the later fetch by digest is local.
        """
        digest, _, _ = self.registry.head_manifest(self.repo, tag)
        if digest is not None:
            return digest
        try:
            raw, _ = self.registry.get_manifest(self.repo, tag)
        except NotFound:
            # Say whether the repository or only the tag is missing, and what exists.
            tags = self.registry.list_tags(self.repo)
            listing = ", ".join(sorted(tags)[:20]) + (" …" if len(tags) > 20 else "") if tags else "none"
            raise NotFound(f"{self.registry.domain}/{self.repo}: no tag {tag!r}; its tags: {listing}", 404,
                           "MANIFEST_UNKNOWN") from None
        digest = Digest.of_bytes(raw)
        self.store.cache.put_bytes(digest, raw)
        return digest

    def resolve(self, digest: Digest, wanted: Platform, *, cross_arch: bool = False,
                explicit_platform: bool = False) -> ResolvedImage:
        """Manifest (choosing from an index), config and layer list for one platform.

        A single-platform image is taken whatever the default platform says (as skopeo
        does); a platform the user asked for explicitly must match it.
        """
        raw, ctype = self.manifest_bytes(digest)
        doc = mf.parse(raw, ctype, where=f"manifest {self._where(digest)}")
        index_digest = None
        if isinstance(doc, mf.Index):
            index_digest = digest
            index_obj = mf.parse_config(raw, f"index {self._where(digest)}")
            chosen = doc.manifests[choose_in_index(index_obj, wanted, cross_arch=cross_arch)]
            raw, ctype = self.manifest_bytes(chosen.digest, chosen.size)
            doc = mf.parse(raw, ctype, where=f"manifest {self._where(chosen.digest)}")
            if isinstance(doc, mf.Index):
                raise ManifestError(f"{self._where(chosen.digest)}: nested indexes are not supported")
            desc = chosen
        else:
            desc = mf.Descriptor(doc.media_type, digest, len(raw))
        config_raw = self.blob_bytes(doc.config, f"config of {self._where(desc.digest)}")
        config = mf.parse_config(config_raw, f"config {doc.config.digest}")
        if index_digest is not None and desc.platform is None:
            # An index entry without a platform: the config must show it is the right one.
            have = Platform(str(config.get("os", "")), str(config.get("architecture", "")),
                            str(config.get("variant", "") or ""))
            if not Matcher(wanted).match(have) and not (have.os == wanted.os and have.architecture == wanted.architecture):
                raise ManifestError(f"{self._where(desc.digest)}: the index entry has no platform and its config "
                                    f"says {have}, not {wanted}")
        ids = mf.diff_ids(config, f"config {doc.config.digest}")
        if len(ids) != len(doc.layers):
            raise ManifestError(
                f"{self._where(desc.digest)}: manifest lists {len(doc.layers)} layers but the config has {len(ids)} diff_ids"
            )
        for i, layer in enumerate(doc.layers):
            if layer.media_type and not mf.is_layer_type(layer.media_type):
                raise ManifestError(f"{self._where(desc.digest)}: layer {i} has media type {layer.media_type}, not an image layer")
        if index_digest is None and explicit_platform:
            own = {"os": config.get("os", ""), "architecture": config.get("architecture", "")}
            if config.get("variant"):
                own["variant"] = config["variant"]
            try:  # the same rules as choosing from an index, applied to the one image there is
                choose([{"platform": own}], wanted, cross_arch=cross_arch)
            except PlatformNotFound as e:
                raise PlatformNotFound(e.wanted, e.offered, single=True) from None
        image = ResolvedImage(doc, desc, config_raw, config, index_digest=index_digest)
        image.layers = [Layer(d, ids[i], -1) for i, d in enumerate(doc.layers)]
        return image

    def blob_bytes(self, desc: mf.Descriptor, what: str) -> bytes:
        """A small blob (a config) in memory, verified; refuses anything over the manifest limit."""
        if desc.size > mf.MAX_MANIFEST_SIZE:
            raise ManifestError(f"{what}: {desc.size} bytes is too large for a config")
        self.fetch_blob(desc, what)
        return self.store.cache.read_bytes(desc.digest)

    def fetch_blob(self, desc: mf.Descriptor, what: str, cancel: threading.Event | None = None) -> bool:
        """Make sure a verified copy of the blob is in the cache; True if it was downloaded."""
        cache = self.store.cache
        if cache.has(desc.digest, desc.size):
            cache.touch(desc.digest)
            self.progress.advance(desc.size)
            self.progress.blob_done(desc.digest, desc.size, cached=True)
            return False
        with self.transfers, self.registry.open_blob(self.repo, desc.digest, desc.size) as stream, \
                cache.writer(desc.digest) as f:
            reader = HashingReader(stream, tee=f)
            while True:
                chunk = reader.read(READ_SIZE)
                if not chunk:
                    break
                self.progress.advance(len(chunk))
                check_cancelled(cancel)
                if reader.count > desc.size:
                    raise SizeMismatch(what, desc.size, reader.count)
            reader.verify(what, desc.digest, desc.size)
        cache.add_source(desc.digest, self.registry.domain, self.repo)
        self.progress.blob_done(desc.digest, desc.size, cached=False)
        return True

    def fetch_layers(self, image: ResolvedImage) -> None:
        """Download (concurrently) and verify every layer, filling in exact diff_ids and sizes."""
        with LayerFetch(self, image, facts=True) as fetch:
            image.layers = [fetch.layer(i) for i in range(len(image.layers))]

    def background_fetch(self, image: ResolvedImage) -> "LayerFetch":
        """Start the downloads; layers are handed out in order with sizes the formats record."""
        return LayerFetch(self, image, facts=False)


class LayerFetch:
    """Layer downloads running in the background, handed out in image order as they land.

    Used as a context manager: leaving it early (an error, Ctrl-C) cancels what is still
    running without waiting for it.
    """

    def __init__(self, source: RegistrySource, image: ResolvedImage, facts: bool):
        self.source = source
        self.image = image
        self.cancel = threading.Event()
        layers = image.layers
        source.progress.start(sum(l.descriptor.size for l in layers), len(layers))
        self._pool = ThreadPoolExecutor(max_workers=max(1, source.concurrency), thread_name_prefix="fetch")
        self._futures: dict[Digest, Future[Layer]] = {}
        for i, layer in enumerate(layers):
            if layer.descriptor.digest not in self._futures:
                self._futures[layer.descriptor.digest] = self._pool.submit(self._one, i, facts)

    def _what(self, i: int) -> str:
        return f"layer {i + 1}/{len(self.image.layers)} {self.image.layers[i].descriptor.digest}"

    def _one(self, i: int, facts: bool) -> Layer:
        layer = self.image.layers[i]
        store = self.source.store
        self.source.fetch_blob(layer.descriptor, self._what(i), self.cancel)
        if facts:
            return store.layer_facts(layer.descriptor, layer.diff_id, self._what(i), self.cancel)
        return store.hinted_layer(layer.descriptor, layer.diff_id)

    def layer(self, i: int) -> Layer:
        """Layer i once its blob is in the cache (re-raises its download error)."""
        layer = self.image.layers[i]
        target = self._futures[layer.descriptor.digest]
        while not target.done():
            # Wake when any download finishes, so a failure elsewhere surfaces at once.
            for f in self._futures.values():
                if f.done() and f.exception() is not None:
                    raise f.exception()  # type: ignore[misc]
            pending = [f for f in self._futures.values() if not f.done()]
            wait(pending, return_when=FIRST_COMPLETED)
        got = target.result()
        if got.diff_id != layer.diff_id:
            # The same compressed blob listed twice with different diff_ids cannot both be right.
            raise DigestMismatch(f"layer {i + 1} diff_id", str(layer.diff_id), str(got.diff_id))
        return got

    def wait_all(self) -> None:
        for i in range(len(self.image.layers)):
            self.layer(i)

    def __enter__(self) -> "LayerFetch":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.cancel.set()
            self._pool.shutdown(wait=False, cancel_futures=True)
        else:
            self._pool.shutdown(wait=True)
            self.source.progress.finish()
