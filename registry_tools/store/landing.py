"""A blob landing in the cache, readable while it still arrives.

The download writes the blob to its temporary file in the cache and checks it against
its digest as the bytes pass; a `Landing` lets one reader follow that file a step behind
the writer, so a big layer can be decompressed while it downloads. (A blob fetched in
parallel ranges is written at its offsets; the followers are told of the prefix its
verifying reader has passed.) The follower only
sees EOF once the download finished and its digest was verified; if the download
fails, the follower raises that failure. (What the follower decompresses is checked
against the layer's diff_id by its own VerifyingReader, as any layer's tar is.)
"""
from __future__ import annotations

import os
import threading
from typing import IO

from registry_tools.cancel import Cancel
from registry_tools.errors import Interrupted
from registry_tools.model.digest import ReaderBase


class Landing:
    def __init__(self, cancel: Cancel):
        self._cancel = cancel
        self._cond = threading.Condition()
        self._fd: int | None = None
        self._written = 0
        self._done = False
        self._error: BaseException | None = None

    def tee(self, f: IO[bytes], written: bool = False) -> "_Tee":
        """What the download writes through: the file, flushed, and the followers told.
        `written`: the bytes are in the file already (a fetch in parts writes them at their
        offsets), and what passes through is the prefix it verified: only the followers are told."""
        with self._cond:
            self._fd = os.dup(f.fileno())
            self._cond.notify_all()
        return _Tee(None if written else f, self)

    def _advance(self, n: int) -> None:
        with self._cond:
            self._written += n
            self._cond.notify_all()

    def finish(self) -> None:
        """The blob is complete and verified."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def _wait(self, pos: int) -> tuple[int | None, int, bool]:
        """(fd, bytes written, done) once there is more than `pos`, or the download ended."""
        with self._cond:
            while not (self._error or self._done or (self._fd is not None and self._written > pos)):
                if self._cancel.is_set():
                    raise Interrupted(self._cancel.reason)
                self._cond.wait(0.25)
            if self._error is not None:
                raise self._error
            return self._fd, self._written, self._done

    def reader(self) -> "Follower":
        return Follower(self)

    def close(self) -> None:
        with self._cond:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _Tee:
    def __init__(self, f: IO[bytes] | None, landing: Landing):
        self._f = f
        self._landing = landing

    def write(self, data: bytes) -> int:
        if self._f is not None:
            self._f.write(data)
            self._f.flush()
        self._landing._advance(len(data))
        return len(data)


class Follower(ReaderBase):
    """Reads a landing blob from the start, a step behind its download."""

    def __init__(self, landing: Landing):
        self._landing = landing
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        fd, written, done = self._landing._wait(self._pos)
        if self._pos >= written:
            return b""  # done, and everything read
        want = written - self._pos if n < 0 else min(n, written - self._pos)
        assert fd is not None
        data = os.pread(fd, want, self._pos)
        self._pos += len(data)
        return data

    def close(self) -> None:
        pass
