"""The copy: resolve an image at a source, make its blobs available verified, hand them to a sink.

Every operation is a copy from a source to a sink. Verification, caching and concurrency
live here once; sources and sinks only speak their own format or protocol.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from . import manifest as mf
from .cache import BlobCache
from .client import Registry
from .digest import Digest, HashingReader, verify_bytes
from .errors import DigestMismatch, Interrupted, ManifestError, SizeMismatch
from .layers import READ_SIZE, close_quietly, decompressed
from .platform import Matcher, Platform, choose_in_index

log = logging.getLogger("registry_tools.copy")

DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True)
class Layer:
    descriptor: mf.Descriptor
    diff_id: Digest
    size: int  # uncompressed bytes


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
    def config_digest(self) -> Digest:
        return self.manifest.config.digest


class Progress:
    """Progress callbacks; the CLI supplies a real one."""

    def start(self, total: int, count: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def blob_done(self, digest: Digest, size: int, cached: bool) -> None: ...

    def finish(self) -> None: ...


def check_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Interrupted("cancelled")


class BlobStore:
    """Verified blobs on local disk: the cache is the single staging area for every sink."""

    def __init__(self, cache: BlobCache):
        self.cache = cache

    def open_verified(self, desc: mf.Descriptor) -> HashingReader:
        """Read a cached blob; call `.verify(...)` (or use `copy_verified`) once drained."""
        return HashingReader(open(self.cache.path(desc.digest), "rb"))

    def copy_verified(self, desc: mf.Descriptor, write: Callable[[bytes], object], what: str) -> None:
        reader = self.open_verified(desc)
        try:
            while chunk := reader.read(READ_SIZE):
                write(chunk)
            reader.verify(what, desc.digest, desc.size)
        finally:
            close_quietly(reader._raw)  # noqa: SLF001

    def copy_uncompressed(self, layer: Layer, write: Callable[[bytes], object], what: str) -> None:
        """Stream a layer's tar, checking the compressed digest and the uncompressed size."""
        reader = self.open_verified(layer.descriptor)
        try:
            stream, _ = decompressed(reader)
            n = 0
            while chunk := stream.read(READ_SIZE):
                n += len(chunk)
                if n > layer.size:
                    raise SizeMismatch(f"{what} (uncompressed)", layer.size, n)
                write(chunk)
            reader.drain()
            reader.verify(what, layer.descriptor.digest, layer.descriptor.size)
            if n != layer.size:
                raise SizeMismatch(f"{what} (uncompressed)", layer.size, n)
        finally:
            close_quietly(reader._raw)  # noqa: SLF001

    def layer_facts(self, desc: mf.Descriptor, expected_diff_id: Digest, what: str,
                    cancel: threading.Event | None = None) -> Layer:
        """diff_id and uncompressed size of a cached layer, computed once and remembered."""
        facts = self.cache.meta(desc.digest)
        if facts and facts.get("diff_id") == str(expected_diff_id) and isinstance(facts.get("size"), int):
            return Layer(desc, expected_diff_id, facts["size"])
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
                 concurrency: int = DEFAULT_CONCURRENCY, progress: Progress | None = None):
        self.registry = registry
        self.repo = repo
        self.store = store
        self.concurrency = concurrency
        self.progress = progress or Progress()

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

    def resolve(self, digest: Digest, wanted: Platform, *, cross_arch: bool = False) -> ResolvedImage:
        """Manifest (choosing from an index), config and layer list for one platform."""
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
            self.progress.advance(desc.size)
            self.progress.blob_done(desc.digest, desc.size, cached=True)
            return False
        with self.registry.open_blob(self.repo, desc.digest, desc.size) as stream, cache.writer(desc.digest) as f:
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
        self.progress.blob_done(desc.digest, desc.size, cached=False)
        return True

    def fetch_layers(self, image: ResolvedImage) -> None:
        """Download (concurrently) and verify every layer, filling in diff_ids and sizes."""
        total = sum(l.descriptor.size for l in image.layers)
        self.progress.start(total, len(image.layers))
        unique: dict[Digest, int] = {}
        for i, layer in enumerate(image.layers):
            unique.setdefault(layer.descriptor.digest, i)

        cancel = threading.Event()

        def one(i: int) -> Layer:
            layer = image.layers[i]
            what = f"layer {i + 1}/{len(image.layers)} {layer.descriptor.digest}"
            self.fetch_blob(layer.descriptor, what, cancel)
            return self.store.layer_facts(layer.descriptor, layer.diff_id, what, cancel)

        results: dict[Digest, Layer] = {}
        pool = ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix="fetch")
        try:
            futures = {pool.submit(one, i): d for d, i in unique.items()}
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is not None:
                    raise f.exception()  # type: ignore[misc]
            for f, d in futures.items():
                results[d] = f.result()
        except BaseException:
            # Stop the other downloads now (Ctrl-C, or one blob failed): do not wait for them.
            cancel.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        self.progress.finish()
        new_layers = []
        for i, layer in enumerate(image.layers):
            facts = results[layer.descriptor.digest]
            if facts.diff_id != layer.diff_id:
                # The same compressed blob listed twice with different diff_ids cannot both be right.
                raise DigestMismatch(f"layer {i + 1} diff_id", str(layer.diff_id), str(facts.diff_id))
            new_layers.append(facts)
        image.layers = new_layers
