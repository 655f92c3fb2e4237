"""What a push sends to one repository: blobs (each once, concurrently), then manifests.

Blobs are pushed under the operation's one transfer limit, each as soon as the source
has it: a HEAD skips what is there, a mount borrows what another repository of the same
registry holds, everything else is uploaded (POST, one PATCH, PUT) from the blob's
origin. A blob another push of the same operation is sending to the same registry (a
sync's images share their base layers) is waited for, then found or mounted: its bytes
go once. Manifests go by digest, then under their tags. A push that fails part-way can
be run again: what landed is found by its HEAD and not sent twice.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol


from registry_tools.cancel import POLL, Cancel
from registry_tools.engine import Progress
from registry_tools.errors import NetworkError, RegistryError
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.compression import READ_SIZE
from registry_tools.model.digest import Digest
from registry_tools.model.image import BlobOrigin
from registry_tools.registry import upload
from registry_tools.registry.client import Registry
from registry_tools.registry.source import RegistrySource
from registry_tools.store.cache import BlobCache
from registry_tools.store.origin import CachedBlobs
from registry_tools.words import size
from registry_tools.workers import Workers

log = logging.getLogger("registry_tools.push")


class Sending:
    """The blobs the pushes of one operation are sending, by registry. A push of a blob another
    push is sending to the same registry waits for it where that saves the bytes: then finds it
    (the same repository) or mounts it from the repository it went to. Once the registry has
    refused a mount in this operation (ECR by default, Docker Hub and GHCR across owners), a
    push to another repository no longer waits: it would upload after the wait all the same."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, Digest], tuple[str, threading.Event]] = {}  # to which repository
        self._refused: set[str] = set()  # registries that refused a mount in this operation

    def mount_refused(self, domain: str) -> None:
        with self._lock:
            self._refused.add(domain)

    @contextmanager
    def claim(self, domain: str, digest: Digest, repo: str, cancel: Cancel) -> Iterator[None]:
        """The block runs once no other push of this operation is sending the blob to `domain`
        (waiting, if one is and the wait can save the bytes, until it has finished: landed or
        failed); the wait ends, raising Interrupted, when `cancel` is set."""
        key = (domain, digest)
        mine: threading.Event | None = None
        while True:
            with self._lock:
                other = self._running.get(key)
                if other is None:
                    mine = threading.Event()
                    self._running[key] = (repo, mine)
                    break
                if other[0] != repo and domain in self._refused:
                    break  # a mount would be refused: send it beside the other
            while not other[1].wait(POLL):
                cancel.check()
        try:
            yield
        finally:
            if mine is not None:
                with self._lock:
                    del self._running[key]
                mine.set()


class Workspace(Protocol):
    """What a push needs of its session: registries, the cache, progress, its workers and the
    blobs its pushes are sending."""

    cache: BlobCache
    progress: Progress
    workers: Workers
    sending: Sending

    def registry(self, domain: str) -> Registry: ...

    def source(self, ref: refs.Reference) -> RegistrySource: ...


@dataclass
class PushResult:
    reference: str
    digest: Digest | None = None  # the manifest (or index) the tag names, once pushed
    uploaded: list[Digest] = field(default_factory=list)
    mounted: list[Digest] = field(default_factory=list)
    present: list[Digest] = field(default_factory=list)
    manifests_put: int = 0
    bytes_uploaded: int = 0


class RegistrySink:
    """One repository of one registry, taking blobs (from the cache) and manifests."""

    def __init__(self, work: Workspace, dest: refs.Reference, origin: BlobOrigin | None = None,
                 progress: Progress | None = None):
        """`origin`: where blobs are read from (default: the cache); `progress`: where the bytes sent
        are counted (default: the operation's)."""
        self.work = work
        self.cache = work.cache
        self.origin: BlobOrigin = origin or CachedBlobs(work.cache)
        self.progress = progress or work.progress
        self._counted: int | None = 0  # bytes sent before `start` (None once started: counted as they go)
        self.registry = work.registry(dest.domain)
        self.repo = dest.path
        self.result = PushResult(str(dest))
        self._lock = threading.Lock()
        self._group = work.workers.group()
        self._futures: dict[Digest, Future[None]] = {}
        self._cancel = self.registry.cancel.child()  # set when the push fails: running uploads stop too

    def submit(self, desc: mf.Descriptor) -> None:
        """Start pushing a blob that is in the cache (each digest once)."""
        with self._lock:
            if desc.digest not in self._futures:
                self._futures[desc.digest] = self._group.submit(self._push_blob, desc)

    def wait(self) -> None:
        self._group.join()

    def start(self, total: int, count: int) -> None:
        """The bytes to send are known (for a build, once its last layer is packed): progress
        starts, counting what was sent already. A blob found there or mounted counts as sent."""
        with self._lock:
            self.progress.start(total, count)
            if self._counted:
                self.progress.advance(self._counted)
            self._counted = None

    def _count(self, n: int) -> None:
        with self._lock:
            if self._counted is None:
                self.progress.advance(n)
            else:
                self._counted += n

    def close(self, ok: bool) -> None:
        """After a failure, stop what is still running (between chunks, before a retry) and wait
        for it: nothing keeps uploading once the push has raised. Progress ends either way."""
        if not ok:
            self._cancel.set("push stopped")
            self._group.drain()
        else:
            self._group.join()
        self.progress.finish()

    def _check_cancelled(self) -> None:
        self._cancel.check()

    def _note(self, kind: str, desc: mf.Descriptor) -> None:
        with self._lock:
            getattr(self.result, kind).append(desc.digest)
            if kind == "uploaded":
                self.result.bytes_uploaded += desc.size
        self.cache.add_source(desc.digest, self.registry.domain, self.repo)
        if kind != "uploaded":  # its bytes were counted as they went
            self._count(desc.size)
        self.work.progress.say(f"{kind} {desc.digest} ({size(desc.size)})")

    def _push_blob(self, desc: mf.Descriptor) -> None:
        # One limit for the whole operation, downloads and uploads alike (not held while another
        # push sends the same blob); the requests stop with the push (one blocked on the wire, say
        # a body the registry stopped reading, is cut off).
        with self.work.sending.claim(self.registry.domain, desc.digest, self.repo, self._cancel), \
                self.work.workers.transfer(), self._cancel.scope():
            self._push_blob_now(desc)

    def _push_blob_now(self, desc: mf.Descriptor) -> None:
        reg, repo = self.registry, self.repo
        if upload.blob_exists(reg, repo, desc.digest, desc.size):
            return self._note("present", desc)
        mount_from = next((r for r in self.origin.mounts(desc, reg.domain) if r != repo), None)
        policy = reg.retry
        for attempt in range(policy.attempts):
            self._check_cancelled()
            try:
                mounted, location, min_chunk = upload.start_upload(reg, repo, desc.digest, mount_from)
                if mounted:
                    return self._note("mounted", desc)
                if mount_from is not None:
                    self.work.sending.mount_refused(reg.domain)
                mount_from = None  # refused once: upload (the session it opened is used right away)
                try:
                    upload.upload(reg, repo, location, desc, self._chunks(desc), min_chunk)
                except Exception:
                    upload.cancel(reg, repo, location)  # the failed session is freed, not left to expire
                    raise
                return self._note("uploaded", desc)
            except (NetworkError, RegistryError) as e:
                status = getattr(e, "status", None)
                if isinstance(e, RegistryError) and status is not None and status < 500 and status not in (408, 429):
                    raise
                if attempt + 1 >= policy.attempts:
                    raise NetworkError(f"upload of {desc.digest} to {reg.domain}/{repo} failed: {e}; "
                                       "run the push again: what landed will not be sent twice") from None
                log.info("upload of %s failed (%s); retrying", desc.digest, e)
                self._cancel.sleep(policy.delay(attempt))
                if upload.blob_exists(reg, repo, desc.digest, desc.size):  # it landed after all
                    return self._note("uploaded", desc)

    def _chunks(self, desc: mf.Descriptor) -> Callable[[int, int], Iterator[bytes]]:
        """The blob's bytes from start to end: the whole blob through the origin's verifying
        reader; a range (the chunked fallback) from a copy verified whole first."""
        def read(start: int, end: int) -> Iterator[bytes]:
            if (start, end) != (0, desc.size):
                for chunk in _range(self.origin.local(desc), desc, start, end, self._check_cancelled):
                    self._count(len(chunk))
                    yield chunk
                return
            with self.origin.open(desc) as reader:
                while chunk := reader.read(READ_SIZE):
                    self._check_cancelled()
                    self._count(len(chunk))
                    yield chunk
        return read

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


def _range(path: Path, desc: mf.Descriptor, start: int, end: int, check: Callable[[], None]) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = end - start
        while left > 0:
            check()
            chunk = f.read(min(READ_SIZE, left))
            if not chunk:
                raise NetworkError(f"blob {desc.digest} in the cache is shorter than {end} bytes")
            left -= len(chunk)
            yield chunk
