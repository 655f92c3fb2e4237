"""push: built images, archives and layouts straight to a registry; no tarball in between.

A registry is a sink like any other. Blobs go first, concurrently under one limit: a
HEAD skips what is there, a mount borrows what another repository of the same registry
holds, everything else is uploaded (POST, one PATCH, PUT). Then the manifests by digest,
the index, and last the tag. A push that fails part-way can be run again: what landed is
found by its HEAD and not sent twice.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import httpx

from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.builder.image import assemble, build_blobs, compress_layer, plan_build
from registry_tools.builder.base import from_docker_archive, is_docker_archive
from registry_tools.formats.oci_layout import LayoutReader
from registry_tools.registry import upload
from registry_tools.model.image import Image
from registry_tools.model.digest import Digest
from registry_tools.errors import CacheDamaged, Interrupted, NetworkError, RegistryError, UsageError
from registry_tools.model.compression import READ_SIZE
from registry_tools.engine import repairing
from registry_tools.session import Session
from registry_tools.builder.spec import BuildSpec

log = logging.getLogger("registry_tools.sink")


@dataclass
class PushResult:
    reference: str
    digest: Digest
    uploaded: list[Digest] = field(default_factory=list)
    mounted: list[Digest] = field(default_factory=list)
    present: list[Digest] = field(default_factory=list)
    manifests_put: int = 0
    bytes_uploaded: int = 0


class RegistrySink:
    """One repository of one registry, taking blobs and manifests."""

    def __init__(self, session: Session, dest: refs.Reference):
        self.session = session
        self.cache = session.cache
        self.registry = session.registry(dest.domain)
        self.repo = dest.path
        self.result = PushResult(str(dest), Digest("sha256", "0" * 64))
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, session.concurrency), thread_name_prefix="push")
        self._futures: dict[Digest, Future] = {}
        self._cancel = threading.Event()  # set when the push fails: running uploads stop too

    # -- blobs ------------------------------------------------------------------------------
    def submit(self, desc: mf.Descriptor) -> None:
        """Start pushing a blob that is in the cache (each digest once)."""
        with self._lock:
            if desc.digest not in self._futures:
                self._futures[desc.digest] = self._pool.submit(self._push_blob, desc)

    def wait(self) -> None:
        for f in list(self._futures.values()):
            f.result()

    def close(self, ok: bool) -> None:
        """After a failure, stop what is still running (between chunks, before a retry) and wait
        for it: nothing keeps uploading once the push has raised."""
        if not ok:
            self._cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=not ok)

    def _check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Interrupted("push stopped")

    def _note(self, kind: str, desc: mf.Descriptor) -> None:
        with self._lock:
            getattr(self.result, kind).append(desc.digest)
            if kind == "uploaded":
                self.result.bytes_uploaded += desc.size
        self.cache.add_source(desc.digest, self.registry.domain, self.repo)
        self.session.progress.say(f"{kind} {desc.digest} ({desc.size / 1e6:.1f} MB)")

    def _push_blob(self, desc: mf.Descriptor) -> None:
        with self.session.transfers:  # one limit for the whole session, downloads and uploads alike
            self._push_blob_now(desc)

    def _push_blob_now(self, desc: mf.Descriptor) -> None:
        reg, repo = self.registry, self.repo
        if upload.blob_exists(reg, repo, desc.digest, desc.size):
            return self._note("present", desc)
        mount_from = next((r for d, r in self.cache.sources(desc.digest) if d == reg.domain and r != repo), None)
        policy = reg.retry
        for attempt in range(policy.attempts):
            self._check_cancelled()
            try:
                mounted, location, min_chunk = upload.start_upload(reg, repo, desc.digest, mount_from)
                if mounted:
                    return self._note("mounted", desc)
                mount_from = None  # refused once: upload (the session it opened is used right away)
                upload.upload(reg, repo, location, desc.digest, desc.size, self._chunks(desc), min_chunk)
                return self._note("uploaded", desc)
            except (NetworkError, httpx.TransportError, RegistryError) as e:
                status = getattr(e, "status", None)
                if isinstance(e, RegistryError) and status is not None and status < 500 and status not in (408, 429):
                    raise
                if attempt + 1 >= policy.attempts:
                    raise NetworkError(f"upload of {desc.digest} to {reg.domain}/{repo} failed: {e}; "
                                       "run the push again: what landed will not be sent twice") from None
                log.info("upload of %s failed (%s); retrying", desc.digest, e)
                if self._cancel.wait(policy.delay(attempt)):
                    raise Interrupted("push stopped") from None
                if upload.blob_exists(reg, repo, desc.digest, desc.size):  # it landed after all
                    return self._note("uploaded", desc)

    def _chunks(self, desc: mf.Descriptor) -> Callable[[int, int], Iterator[bytes]]:
        path = self.cache.path(desc.digest)

        def read(start: int, end: int) -> Iterator[bytes]:
            whole = start == 0 and end == desc.size
            h = hashlib.sha256()
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start
                while left > 0:
                    self._check_cancelled()
                    chunk = f.read(min(READ_SIZE, left))
                    if not chunk:
                        raise CacheDamaged(desc.digest, f"shorter than {desc.size} bytes")
                    if whole:
                        h.update(chunk)
                    left -= len(chunk)
                    yield chunk
            if whole and h.hexdigest() != desc.digest.hex:
                raise CacheDamaged(desc.digest, "its content changed")
        return read

    # -- manifests ----------------------------------------------------------------------------
    def put_manifest(self, raw: bytes, media_type: str, tag: str | None) -> Digest:
        """By digest (unless there already), then the tag (unless it already points here)."""
        digest = Digest.of_bytes(raw)
        reg, repo = self.registry, self.repo
        if tag and reg.manifest_digest(repo, tag) == digest:
            return digest
        if reg.manifest_digest(repo, str(digest)) is None:
            reg.put_manifest(repo, str(digest), raw, media_type)
            self.result.manifests_put += 1
        if tag:
            reg.put_manifest(repo, tag, raw, media_type)
            self.result.manifests_put += 1
        return digest


def _dest(dest: str) -> tuple[refs.Reference, str | None]:
    ref = refs.parse_normalized(dest)
    if ref.digest:
        raise UsageError(f"push destination {dest} names a digest; give a tag (or none, for latest)")
    return ref, ref.tag or "latest"


def push_images(images: list[Image], index: tuple[bytes, str] | None, dest: str,
                session: Session) -> PushResult:
    """Blobs of every image, then each manifest by digest, then the index (if any), then the tag."""
    ref, tag = _dest(dest)
    sink = RegistrySink(session, ref)
    ok = False
    try:
        for image in images:
            for layer in image.layers:
                sink.submit(layer.descriptor)
            sink.submit(image.manifest.config)
        sink.wait()
        for image in images:
            sink.put_manifest(image.manifest.raw, image.manifest.media_type, None if index else tag)
        sink.result.digest = (sink.put_manifest(index[0], index[1], tag) if index
                              else images[0].manifest_descriptor.digest)
        sink.result.reference = f"{ref.name}:{tag}"
        ok = True
        return sink.result
    finally:
        sink.close(ok)


def build_and_push(spec: BuildSpec, dest: str, session: Session) -> tuple[PushResult, Image]:
    """Uploads start as soon as each layer is packed: both cores compress while the network sends."""
    ref, tag = _dest(dest)
    if not ref.tag and spec.tag:
        tag = spec.tag
    sink = RegistrySink(session, ref)
    plan = plan_build(spec, session)
    ok = False
    try:
        image = build_blobs(plan, session, jobs=2, on_layer=lambda layer: sink.submit(layer.descriptor))
        sink.submit(image.manifest.config)
        sink.wait()
        if not ref.tag and not spec.tag:
            tag = hashlib.sha256(image.config_raw).hexdigest()[:32]
        sink.result.digest = sink.put_manifest(image.manifest.raw, image.manifest.media_type, tag)
        sink.result.reference = f"{ref.name}:{tag}"
        ok = True
        return sink.result, image
    finally:
        sink.close(ok)
        plan.close()


# --- sources: OCI layout, oci-archive, docker-archive ------------------------------------------

def load_source(source: str, session: Session, name: str | None = None) -> tuple[list[Image], tuple[bytes, str] | None]:
    """Images (and an index, for a multi-platform layout) from a layout dir, oci-archive or docker-archive."""
    path = Path(source)
    if not path.exists():
        raise UsageError(f"push source {source} does not exist")
    if path.is_file() and is_docker_archive(path, f"push source {source}"):
        base = from_docker_archive(path, name, session)
        layers = [compress_layer(layer, "gz", session.cache) for layer in base.layers]
        platform = {k: base.config[k] for k in ("os", "architecture", "variant") if base.config.get(k)}
        return [assemble(base.config, base.config_raw, layers, platform or None, session.cache)], None
    with LayoutReader(path, f"push source {source}") as layout:
        entries = layout.entries(name)
        if len(entries) != 1:
            raise UsageError(f"push source {source}: holds {len(entries)} images" +
                             ("; name one as SOURCE:TAG" if len(entries) > 1 else ""))
        desc = entries[0]
        doc = layout.document(desc, session.cache)
        if isinstance(doc, mf.Index):
            images = [layout.image(d, session.cache) for d in doc.manifests if d.media_type in mf.IMAGE_TYPES]
            return images, (doc.raw, doc.media_type)
        return [layout.image(desc, session.cache)], None


def push(source: str, dest: str, session: Session | None = None) -> PushResult:
    """`registry-tools push SOURCE DEST`: SOURCE is a layout dir (optionally DIR:TAG) or an archive."""
    own = session is None
    session = session or Session()
    try:
        name = None
        if not os.path.exists(source) and ":" in source:
            source, _, name = source.rpartition(":")
        # A blob found damaged in the cache is imported again from the source on the second run.
        return repairing(session.cache, lambda: push_images(*load_source(source, session, name), dest, session))
    finally:
        if own:
            session.close()


__all__ = ["PushResult", "RegistrySink", "build_and_push", "load_source", "push", "push_images"]
