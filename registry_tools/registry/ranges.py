"""A big blob fetched as parallel Range requests, on connections of their own, verified as one stream.

Behind a link that caps each connection (or a long path one TCP stream cannot fill), one
connection per blob bounds a pull by its largest layer. A blob of at least `RANGES_FROM`
bytes is asked for as a range (all of it) on one connection; if that connection proves
slow (under `SPLIT_BELOW` bytes a second over its first `PROBE` seconds), it stops at a piece
boundary and the rest is cut into pieces, fetched by up to `--range-parts` lanes at once:
each lane takes the lowest piece not yet taken under one of the operation's `--jobs`
transfer slots, as a spare (only while no other transfer waits for one), one Range request
after another (a `BlobStream` each: resumed with Range after a cut, retried as any
download), writing its bytes at their offsets in the cache's temporary file. A lane that
gets its slot late finds less left to do, and near the end a piece is what is left shared
by the lanes, so they end together; pieces are taken in order, so the written prefix grows
with the lanes' combined speed. Where one connection is fast (a registry on the same machine or network)
nothing changes: the blob is one request, and the CPU that more connections would cost
stays with decompressing and hashing.

The sha256 is taken in order by the one verifying reader, following the written prefix
(read back from the file: the blob is never held in memory), so the blob is checked as a
single download is; whoever follows the blob while it lands (`store.landing`) is told of
the prefix it verified. A registry that ignores Range answers the first request with the
whole blob, which then is the one download (no lane starts: nothing is fetched twice).
"""
from __future__ import annotations

import os
import threading
import time
from typing import IO, Callable

from registry_tools.cancel import POLL, Cancel
from registry_tools.model.digest import ReaderBase, VerifyingReader, Writable
from registry_tools.model.manifest import Descriptor
from registry_tools.registry.blob import CHUNK, BlobStream
from registry_tools.registry.client import Registry
from registry_tools.workers import Workers

RANGES_FROM = 32 << 20  # a blob this big (compressed) may be fetched in parallel ranges
PARTS = 4  # lanes for such a blob (--range-parts; 1: one connection per blob)
PROBE = 0.25  # seconds of the first connection before its speed is judged
SPLIT_BELOW = 32 << 20  # bytes a second: a connection slower than this is joined by more lanes
PIECES_PER_LANE = 4  # about this many pieces for each lane, so that late lanes even out
MIN_PIECE = 8 << 20  # a request costs a round trip: no piece is smaller (but the last)
MAX_PIECE = 64 << 20
MIN_TAIL = 2 << 20  # near the end pieces shrink (what is left shared by the lanes), down to this


def piece_size(size: int, parts: int) -> int:
    """How much one Range request of a lane asks for (whole megabytes)."""
    return max(MIN_PIECE, min(MAX_PIECE, size // (parts * PIECES_PER_LANE))) // CHUNK * CHUNK


class _Landed:
    """The pieces taken in order and how far each is written; the contiguous prefix that makes;
    the file's descriptor (closed when the last of its users lets go, so a lane still
    stopping never writes into a descriptor another file has been given)."""

    def __init__(self, fd: int, size: int, step: int, lanes: int, cancel: Cancel):
        self.fd = fd
        self.size = size
        self._step = step
        self._lanes = lanes
        self._next = size  # the first byte no lane has taken: the first request takes all, until a split
        self._at: dict[int, int] = {0: 0}  # start of each piece being written -> written up to
        self._cancel = cancel
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._users = 1  # the verifying reader
        self._stopped = False

    def split(self, at: int) -> int:
        """The first request ends at `at`; what follows is for the lanes to take, in this many pieces."""
        with self._cond:
            self._next = at
            return -(-(self.size - at) // self._step)

    def take(self) -> tuple[int, int] | None:
        """The lowest piece no lane has taken (None: all are taken). Near the end a piece is what is
        left shared by the lanes (not under MIN_TAIL), so they end together: one last whole piece
        on one connection would leave the others idle for as long as it takes."""
        with self._cond:
            left = self.size - self._next
            if left <= 0:
                return None
            step = min(self._step, max(MIN_TAIL, -(-left // self._lanes) // CHUNK * CHUNK))
            start, self._next = self._next, min(self.size, self._next + step)
            self._at[start] = start
            return start, self._next

    def advance(self, start: int, pos: int) -> None:
        with self._cond:
            self._at[start] = pos
            self._cond.notify_all()

    def done(self, start: int) -> None:
        with self._cond:
            del self._at[start]
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self._error = self._error or error
            self._cond.notify_all()

    def beyond(self, pos: int) -> int:
        """The written prefix once it reaches past `pos` (a lane's failure and Ctrl-C raised)."""
        with self._cond:
            while (ready := min(self._at.values(), default=self._next)) <= pos and self._error is None:
                self._cancel.check()
                self._cond.wait(POLL)
            if self._error is not None:
                raise self._error
            return ready

    def enter(self) -> bool:
        """A lane starts using the file (False: the fetch has ended, it must not)."""
        with self._cond:
            if self._stopped:
                return False
            self._users += 1
            return True

    def leave(self, stop: bool = False) -> None:
        with self._cond:
            self._stopped = self._stopped or stop
            self._users -= 1
            last = self._users == 0
        if last:
            os.close(self.fd)


class _InOrder(ReaderBase):
    """The blob read back from its file in order, as far as it is written."""

    def __init__(self, landed: _Landed):
        self._landed = landed
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if self._pos >= self._landed.size:
            return b""
        ready = self._landed.beyond(self._pos)
        data = os.pread(self._landed.fd, min(ready - self._pos, CHUNK if n < 0 else n), self._pos)
        if not data:
            raise OSError(f"the cache file ends at byte {self._pos}, before what was written")
        self._pos += len(data)
        return data


class RangedFetch:
    """One blob: its first request, and the lanes that join it on a slow link, in the
    operation's workers, each under its transfer limit."""

    def __init__(self, registry: Registry, repo: str, workers: Workers, parts: int):
        self.registry = registry
        self.repo = repo
        self.workers = workers
        self.parts = parts

    def into(self, desc: Descriptor, what: str, f: IO[bytes], tee: Writable | None,
             advance: Callable[[int], None], cancel: Cancel) -> None:
        """Fetch the blob into `f` (its bytes at their offsets), verified against its descriptor;
        `tee` is told each verified piece, `advance` its size. Returns once it is all checked."""
        fetch = _Fetch(self, desc, _Landed(os.dup(f.fileno()), desc.size, piece_size(desc.size, self.parts),
                                           self.parts, cancel), cancel.child())
        try:
            fetch.group.submit(fetch.first)
            reader = VerifyingReader(_InOrder(fetch.landed), desc.digest, desc.size, what, tee=tee)
            while chunk := reader.read(CHUNK):
                advance(len(chunk))
            fetch.group.join()
        except BaseException:
            fetch.part.set("the download stopped")
            fetch.group.cancel_waiting()
            raise
        finally:
            fetch.landed.leave(stop=True)


class _Fetch:
    """The requests of one blob: the first, and the lanes started when it proves slow."""

    def __init__(self, ranged: RangedFetch, desc: Descriptor, landed: _Landed, part: Cancel):
        self.ranged = ranged
        self.desc = desc
        self.landed = landed
        self.part = part  # stops every request of the blob when the fetch fails
        self.group = ranged.workers.group(ranged.parts)

    def _stream(self, span: tuple[int, int]) -> BlobStream:
        r = self.ranged
        return BlobStream(r.registry, r.repo, self.desc.digest, self.desc.size, span)

    def first(self) -> None:
        """All of the blob on one connection, split when it proves slow; then pieces, as a lane."""
        began, first = 0.0, 0  # when the first bytes came, and how many

        def judge(stream: BlobStream, pos: int) -> bool:
            """Whether to judge this connection again (False: it was, or lanes have joined it)."""
            nonlocal began, first
            if stream.whole:
                return False
            if not began:
                began, first = time.monotonic(), pos
            elapsed = time.monotonic() - began
            if elapsed < PROBE or (pos - first) / elapsed >= SPLIT_BELOW:
                return True
            at = stream.stop_at(-(-(pos + CHUNK) // CHUNK) * CHUNK)  # soon, at a whole megabyte
            for _ in range(min(self.ranged.parts - 1, self.landed.split(at))):
                self.group.submit(self.lane)
            return False

        self._work((0, self.desc.size), judge)

    def lane(self) -> None:
        self._work(None, None)

    def _work(self, first: tuple[int, int] | None, judge: Callable[[BlobStream, int], bool] | None) -> None:
        """One connection's work. The first request holds the blob's own transfer slot to the end and
        then takes pieces as a lane does; a lane takes one piece at a time, each under a spare slot
        (taken only when no other transfer waits: a blob of its own downloads before a lane's next
        piece, so lanes never leave a small layer for last)."""
        landed, workers = self.landed, self.ranged.workers
        if not landed.enter():
            return
        try:
            with self.part.scope():
                if first is not None:
                    with workers.transfer():
                        self._fetch(first, judge)
                        while (span := landed.take()) is not None:
                            self._fetch(span, None)
                    return
                while True:
                    with workers.transfer(spare=True):
                        span = landed.take()
                        if span is None:
                            return
                        self._fetch(span, None)
        except BaseException as e:
            landed.fail(e)
            raise
        finally:
            landed.leave()

    def _fetch(self, span: tuple[int, int], judge: Callable[[BlobStream, int], bool] | None) -> None:
        self.part.check()
        with self._stream(span) as stream:
            self._copy(stream, span[0], judge)

    def _copy(self, stream: BlobStream, start: int,
              judge: Callable[[BlobStream, int], bool] | None) -> None:
        landed, pos = self.landed, start
        while data := stream.read(CHUNK):
            self.part.check()
            n = os.pwrite(landed.fd, data, pos)
            while n < len(data):  # pwrite may write less than asked
                n += os.pwrite(landed.fd, memoryview(data)[n:], pos + n)
            pos += len(data)
            landed.advance(start, pos)
            if judge is not None and not judge(stream, pos):
                judge = None
        landed.done(start)
