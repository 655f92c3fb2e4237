"""Writing tar archives (docker-archive, oci-archive) from a plan of entries.

An archive is first planned as a list of entries (name, size, where the bytes come
from); the plan is then written either as one stream (to a pipe, or only to be hashed)
or, for a file, with the layers decompressed in parallel straight to their offsets.
Both give the same bytes. Entries are written in a fixed order with fixed owners, modes
and times, so the archive depends on the image alone: changing anything here changes
every pinned hash, and the golden hashes in the tests exist to catch that.
"""
from __future__ import annotations

import hashlib
import os
import queue
import tarfile
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, cast

from registry_tools.fileio import WRITE_BEHIND, drop_cached
from registry_tools.model import manifest as mf
from registry_tools.model.digest import ReadableFile
from registry_tools.model.image import Layer
from registry_tools.formats.checks import LaterCheck
from registry_tools.store.blobs import BlobStore, LayerCheck, checks_later
from registry_tools.workers import Workers, giving_way

BLOCK = 512
END = b"\0" * (2 * BLOCK)

Write = Callable[[bytes], object]


def _header(name: str, size: int, kind: bytes, mode: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def _padding(size: int) -> bytes:
    return b"\0" * ((-size) % BLOCK)


@dataclass(frozen=True)
class Entry:
    """One archive member: its bytes are `data`, a layer's tar (`layer`), a blob as stored
    (`blob`), or whatever `producer` writes (exactly `size` bytes)."""

    name: str
    size: int
    mode: int = 0o444
    kind: bytes = tarfile.REGTYPE
    data: bytes | None = None
    layer: Layer | None = None
    planned: int | None = None  # for a layer not yet measured: the size its record gives
    opener: Callable[[], ReadableFile] | None = None  # its compressed bytes while they still arrive
    dominant: bool = False  # most of the image: decompress, hash and write it on threads of their own
    gives_way: bool = False  # another layer is most of the image: produce this one at a lower CPU priority
    blob: mf.Descriptor | None = None
    what: str = ""
    producer: Callable[[Write], None] | None = None

    @property
    def header(self) -> bytes:
        return _header(self.name, self.size, self.kind, self.mode)

    @property
    def checked_by_hash(self) -> bool:
        """A smaller layer beside a dominant one whose diff_id the archive's ordered hash can
        check as it reads the layer back at the end, on the core that is idle there."""
        return self.gives_way and self.layer is not None and checks_later(self.layer, self.opener)

    def produce(self, store: BlobStore, write: Write, checked_later: Callable[[str], None] | None = None) -> None:
        if self.data is not None:
            write(self.data)
        elif self.layer is not None and checked_later is not None:  # the caller checks its diff_id (checked_by_hash)
            store.copy_checked_later(self.layer, write, self.what, self.planned, checked_later)
        elif self.layer is not None:
            store.copy_uncompressed(self.layer, write, self.what, self.planned, self.opener, self.dominant)
        elif self.blob is not None:
            store.copy_verified(self.blob, write, self.what)
        elif self.producer is not None:
            self.producer(write)


def directory(name: str) -> Entry:
    return Entry(name.rstrip("/") + "/", 0, 0o755, tarfile.DIRTYPE)


def file(name: str, data: bytes) -> Entry:
    return Entry(name, len(data), data=data)


# --- writing a plan ------------------------------------------------------------------

def write_stream(entries: Iterable[Entry], store: BlobStore, write: Write) -> None:
    """The archive as one sequential stream."""
    for e in entries:
        write(e.header)
        e.produce(store, write)
        write(_padding(e.size))
    write(END)


class _Region:
    """A stretch of the output file, written front to back; `done_to` says how far. The last
    few megabytes written are kept in memory too, so the hash, when it keeps up, takes them
    from there instead of reading them back."""

    KEEP = 8 << 20

    def __init__(self, start: int, end: int, check: "LaterCheck | None" = None):
        self.start = start
        self.end = end
        self.check = check  # a layer's diff_id, checked on these bytes as the hash reads them
        self.done_to = start
        self.failed = False
        self.cond = threading.Condition()
        self._recent: deque[tuple[int, bytes]] = deque()
        self._kept = 0

    def advance(self, to: int, data: bytes | None = None) -> None:
        """Written up to `to` (`data`: the bytes that end there)."""
        with self.cond:
            if data:
                self._recent.append((to - len(data), data))
                self._kept += len(data)
                while self._kept > self.KEEP:
                    self._kept -= len(self._recent.popleft()[1])
            self.done_to = to
            self.cond.notify_all()

    def take(self, pos: int, limit: int) -> memoryview | None:
        """Up to `limit` written bytes from `pos` that are still in memory (None: read them back)."""
        with self.cond:
            while self._recent and self._recent[0][0] + len(self._recent[0][1]) <= pos:
                self._kept -= len(self._recent.popleft()[1])
            if not self._recent or self._recent[0][0] > pos:
                return None
            start, data = self._recent[0]
            return memoryview(data)[pos - start:pos - start + limit]

    def finish(self) -> None:
        self.advance(self.end)

    def fail(self) -> None:
        with self.cond:
            self.failed = True
            self.cond.notify_all()

    def written_beyond(self, pos: int) -> int:
        """Wait until more than `pos` is written (or the region failed); how far it is written."""
        with self.cond:
            while self.done_to <= pos and not self.failed:
                self.cond.wait()
            return self.done_to


class _OrderedHasher:
    """Hashes a file in order, following the writers: a region is hashed as far as it is written.

    While the archive is being written, what the hash has passed is done with: its writeback
    starts (DONTNEED on dirty pages) and, a few steps behind (written by then), its pages
    leave the page cache. A large archive then cycles through a small set of pages instead
    of touching as many new ones as it is long (new pages cost more than reused ones, on
    virtual machines above all). Once every byte is written (`close`), what the hash still
    reads is left alone: no write would take the pages freed, and the hash is then all the
    write waits for. Where the disk is slow the pages are still dirty and simply stay:
    nothing waits for them.
    """

    def __init__(self, fd: int):
        self.fd = fd
        self._behind = 0  # writeback started up to here
        self._started: list[tuple[int, int]] = []
        self.hash = hashlib.sha256()
        self._regions: list[_Region] = []
        self._cond = threading.Condition()
        self._closed = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hash", daemon=True)
        self._thread.start()

    def region(self, start: int, end: int, check: LaterCheck | None = None) -> _Region:
        region = _Region(start, end, check)
        with self._cond:
            self._regions.append(region)
            self._cond.notify()
        return region

    def close(self) -> bytes:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        if self.error:
            raise self.error
        for region in self._regions:  # every layer the hash checked on the way
            if region.check is not None and (error := region.check.result()) is not None:
                raise error
        return self.hash.digest()

    def abort(self) -> None:
        self.error = self.error or RuntimeError("aborted")
        with self._cond:
            self._closed = True
            for region in self._regions:
                region.fail()
            self._cond.notify()
        self._thread.join(timeout=5)
        for region in self._regions:  # their threads end
            if region.check is not None:
                region.check.stop()

    def _next(self, i: int) -> _Region | None:
        with self._cond:
            while i >= len(self._regions) and not self._closed:
                self._cond.wait()
            return self._regions[i] if i < len(self._regions) else None

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as e:  # noqa: B036 - close() raises it, on the thread that waits for the hash
            self.error = e

    def _follow(self) -> None:
        i = 0
        while (region := self._next(i)) is not None:
            pos = region.start
            while pos < region.end:
                ready = region.written_beyond(pos)
                if self.error or region.failed:
                    return
                while pos < ready:
                    chunk = region.take(pos, ready - pos) or os.pread(self.fd, min(1 << 20, ready - pos), pos)
                    if not chunk:
                        self.error = IOError("output file shorter than written")
                        return
                    self.hash.update(chunk)
                    if region.check is not None:
                        region.check.feed(pos, chunk)
                    pos += len(chunk)
                    self._done_with(pos)
            i += 1

    def _done_with(self, pos: int) -> None:
        if pos - self._behind < WRITE_BEHIND or self._closed:  # closed: every byte is written
            return
        drop_cached(self.fd, self._behind, pos - self._behind)  # dirty: its writeback starts
        self._started.append((self._behind, pos))
        while len(self._started) > 2:  # two steps back: written by now on any usual disk
            start, end = self._started.pop(0)
            drop_cached(self.fd, start, end - start)  # clean: the pages leave
        self._behind = pos


_STOP = object()


class _Writer:
    """The one thread that writes the file: pwrite for every produced entry, fed through a
    bounded queue. Producers (decompressors) never wait for the disk, and never contend with
    each other for the file's lock (concurrent writers to one file spin on it); each region
    advances as its bytes land, so the hash follows."""

    def __init__(self, fd: int, depth: int = 32):
        self.fd = fd
        self.error: BaseException | None = None
        self.q: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._run, name="write", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not _STOP:
            region, pos, data = cast("tuple[_Region, int, bytes | None]", item)
            if self.error is not None:
                region.fail()
                continue  # drain, so no producer blocks on a dead writer
            try:
                if data is None:
                    region.finish()
                    continue
                n = os.pwrite(self.fd, data, pos)
                while n < len(data):  # pwrite may write less than asked
                    n += os.pwrite(self.fd, data[n:], pos + n)
                region.advance(pos + len(data), data)
            except BaseException as e:
                self.error = e
                region.fail()

    def close_quietly(self) -> None:
        try:
            self.close()
        except BaseException:  # noqa: B036 - the error that stopped the write is already on its way
            pass

    def feed(self, region: _Region) -> "_Feed":
        return _Feed(self, region)

    def close(self) -> None:
        """Every queued write done (its error raised); the thread ends."""
        self.q.put(_STOP)
        self.thread.join()
        if self.error is not None:
            raise self.error


class _Feed:
    """One entry's bytes, in order, to the writer."""

    def __init__(self, writer: _Writer, region: _Region):
        self.writer = writer
        self.region = region
        self.pos = region.start

    def write(self, data: bytes) -> None:
        if self.writer.error is not None:
            raise self.writer.error
        if data:
            self.writer.q.put((self.region, self.pos, bytes(data)))
            self.pos += len(data)

    def finish(self) -> None:
        self.writer.q.put((self.region, self.pos, None))


def write_positional(entries: Iterable[Entry], store: BlobStore, fd: int, workers: Workers | None = None,
                     producers: int = 3) -> bytes:
    """Write the archive to a file, producing the big entries in parallel at their offsets
    (`producers` at a time, in the operation's `workers`).

    Each produced entry is decompressed on one thread and written on another, and the
    sha256 of the whole file is computed in order right behind the writers; returns it.
    """
    hasher = _OrderedHasher(fd)
    writer = _Writer(fd)
    own = workers is None
    pool = (workers or Workers(producers)).group(producers)
    offset = 0

    def produce_at(e: Entry, feed: _Feed, check: LaterCheck | None) -> None:
        later = check.check.written if check is not None else None
        if e.gives_way:  # the dominant layer's inflate is the pull's critical path: it comes first
            giving_way(lambda: e.produce(store, feed.write, later))
        else:
            e.produce(store, feed.write, later)
        feed.write(_padding(e.size))
        feed.finish()

    try:
        for e in entries:
            header = e.header
            os.pwrite(fd, header, offset)
            body = offset + len(header)
            end = body + e.size + len(_padding(e.size))
            hasher.region(offset, body).finish()
            check = (LaterCheck(LayerCheck(store, e.layer, e.what, e.size), body)
                     if e.layer is not None and e.checked_by_hash and e.size else None)
            region = hasher.region(body, end, check)
            if e.data is not None or e.size == 0:
                os.pwrite(fd, e.data + _padding(e.size) if e.data else _padding(e.size), body)
                region.finish()
            else:
                pool.submit(produce_at, e, writer.feed(region), check)
            offset = end
            error = pool.first_error()  # a failed worker surfaces without waiting for the rest
            if error is not None:
                raise error
        os.pwrite(fd, END, offset)
        hasher.region(offset, offset + len(END)).finish()
        pool.join()
        writer.close()
        return hasher.close()
    except BaseException:
        pool.cancel_waiting()
        writer.error = writer.error or RuntimeError("aborted")
        hasher.abort()
        writer.close_quietly()
        raise
    finally:
        if own:
            pool.workers.close()
