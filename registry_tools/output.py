"""Writing results without ever leaving a half-written destination.

Output goes to a temporary name in the destination's own directory and is renamed over
the destination only after every check passed. Hashing and writing run on a second
thread so that the producer (usually a decompressor) keeps the other core busy.
"""
from __future__ import annotations

import hashlib
import os
import queue
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

_STOP = object()


class PipelinedHashWriter:
    """write() hands bytes to a thread that hashes them and passes them on.

    Memory stays bounded: at most `depth` chunks wait in the queue.
    """

    def __init__(self, sink: Callable[[bytes], object] | None, depth: int = 16):
        self.hash = hashlib.sha256()
        self.count = 0
        self._sink = sink
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hash-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue
            try:
                self.hash.update(item)
                if self._sink is not None:
                    self._sink(item)
            except BaseException as e:  # reported to the producer on its next write or close
                self._error = e

    def write(self, data: bytes) -> int:
        if self._error is not None:
            raise self._error
        if data:
            self.count += len(data)
            self._q.put(bytes(data))
        return len(data)

    def close(self) -> None:
        self._q.put(_STOP)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        self._error = self._error or RuntimeError("aborted")
        try:
            self._q.put_nowait(_STOP)
        except queue.Full:
            pass
        self._thread.join(timeout=5)


class AtomicFile:
    """A temporary file beside `dest`; commit() renames it into place, abort() removes it."""

    def __init__(self, dest: str | os.PathLike[str]):
        self.dest = Path(dest)
        parent = self.dest.parent if str(self.dest.parent) else Path(".")
        if not parent.is_dir():
            raise FileNotFoundError(f"directory {parent} does not exist")
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{self.dest.name}.", suffix=".part")
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb", buffering=0)

    def commit(self, mode: int = 0o644) -> None:
        self.file.close()
        os.chmod(self.tmp, mode)
        os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


class AtomicDir:
    """A temporary directory beside `dest`; commit() swaps it into place."""

    def __init__(self, dest: str | os.PathLike[str]):
        self.dest = Path(dest)
        parent = self.dest.parent if str(self.dest.parent) else Path(".")
        if not parent.is_dir():
            raise FileNotFoundError(f"directory {parent} does not exist")
        self.tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{self.dest.name}.", suffix=".part"))
        os.chmod(self.tmp, 0o755)

    def commit(self) -> None:
        old = None
        if self.dest.exists() or self.dest.is_symlink():
            old = Path(tempfile.mkdtemp(dir=self.dest.parent, prefix=f".{self.dest.name}.", suffix=".old"))
            os.rmdir(old)
            os.replace(self.dest, old)
        os.replace(self.tmp, self.dest)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
