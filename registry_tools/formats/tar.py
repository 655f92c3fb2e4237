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
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

from registry_tools.model import manifest as mf
from registry_tools.model.image import Layer
from registry_tools.store.blobs import BlobStore

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
    blob: mf.Descriptor | None = None
    what: str = ""
    producer: Callable[[Write], None] | None = None

    @property
    def header(self) -> bytes:
        return _header(self.name, self.size, self.kind, self.mode)

    def produce(self, store: BlobStore, write: Write) -> None:
        if self.data is not None:
            write(self.data)
        elif self.layer is not None:
            store.copy_uncompressed(self.layer, write, self.what, self.planned)
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


class _OrderedHasher:
    """Hashes a file region by region, in order, as each region is declared complete."""

    def __init__(self, fd: int):
        self.fd = fd
        self.hash = hashlib.sha256()
        self._regions: list[tuple[int, int, threading.Event]] = []
        self._cond = threading.Condition()
        self._closed = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hash", daemon=True)
        self._thread.start()

    def region(self, start: int, end: int) -> threading.Event:
        ev = threading.Event()
        with self._cond:
            self._regions.append((start, end, ev))
            self._cond.notify()
        return ev

    def close(self) -> bytes:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        if self.error:
            raise self.error
        return self.hash.digest()

    def abort(self) -> None:
        self.error = self.error or RuntimeError("aborted")
        with self._cond:
            self._closed = True
            for _, _, ev in self._regions:
                ev.set()
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        i = 0
        while True:
            with self._cond:
                while i >= len(self._regions) and not self._closed:
                    self._cond.wait()
                if i >= len(self._regions):
                    return
                start, end, ev = self._regions[i]
            ev.wait()
            if self.error:
                return
            pos = start
            while pos < end:
                chunk = os.pread(self.fd, min(1 << 20, end - pos), pos)
                if not chunk:
                    self.error = IOError("output file shorter than written")
                    return
                self.hash.update(chunk)
                pos += len(chunk)
            i += 1


def write_positional(entries: Iterable[Entry], store: BlobStore, fd: int, workers: int = 2) -> bytes:
    """Write the archive to a file, producing the big entries in parallel at their offsets.

    Returns the sha256 of the whole file, computed in order behind the writers.
    """
    hasher = _OrderedHasher(fd)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="unpack")
    futures = []
    offset = 0

    def produce_at(e: Entry, start: int, done: threading.Event) -> None:
        pos = start

        def pwrite(data: bytes) -> None:
            nonlocal pos
            n = os.pwrite(fd, data, pos)
            while n < len(data):  # pwrite may write less than asked
                n += os.pwrite(fd, data[n:], pos + n)
            pos += len(data)

        e.produce(store, pwrite)
        pwrite(_padding(e.size))
        done.set()

    try:
        for e in entries:
            header = e.header
            os.pwrite(fd, header, offset)
            body = offset + len(header)
            end = body + e.size + len(_padding(e.size))
            hasher.region(offset, body).set()
            ev = hasher.region(body, end)
            if e.data is not None or e.size == 0:
                os.pwrite(fd, e.data + _padding(e.size) if e.data else _padding(e.size), body)
                ev.set()
            else:
                futures.append(pool.submit(produce_at, e, body, ev))
            offset = end
            for f in futures:  # surface a failed worker without waiting for the rest
                if f.done() and f.exception() is not None:
                    raise f.exception()  # type: ignore[misc]
        os.pwrite(fd, END, offset)
        hasher.region(offset, offset + len(END)).set()
        for f in futures:
            f.result()
        pool.shutdown(wait=True)
        return hasher.close()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        hasher.abort()
        raise
