"""Writing results without ever leaving a half-written destination.

Output goes to a temporary name in the destination's own directory and is renamed over
the destination only after every check passed. Hashing and writing run on a second
thread so that the producer (usually a decompressor) keeps the other core busy.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

_STOP = object()


class _Consumer:
    """One thread applying `fn` to every chunk, in order, from a bounded queue."""

    def __init__(self, fn: Callable[[bytes], object], depth: int, name: str):
        self.fn = fn
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is _STOP:
                return
            if self.error is None:
                try:
                    self.fn(item)
                except BaseException as e:  # reported to the producer on its next write or close
                    self.error = e


class PipelinedHashWriter:
    """write() hands each chunk to a hashing thread and, in parallel, to a writing thread.

    The producer (usually a decompressor) keeps its own core; memory stays bounded since
    at most `depth` chunks wait in each queue.
    """

    def __init__(self, sink: Callable[[bytes], object] | None, depth: int = 16):
        self.hash = hashlib.sha256()
        self.count = 0
        self._consumers = [_Consumer(self.hash.update, depth, "hash")]
        if sink is not None:
            self._consumers.append(_Consumer(sink, depth, "write"))

    def _raise_pending(self) -> None:
        for c in self._consumers:
            if c.error is not None:
                raise c.error

    def write(self, data: bytes) -> int:
        self._raise_pending()
        if data:
            self.count += len(data)
            chunk = bytes(data)
            for c in self._consumers:
                c.q.put(chunk)
        return len(data)

    def close(self) -> None:
        for c in self._consumers:
            c.q.put(_STOP)
        for c in self._consumers:
            c.thread.join()
        self._raise_pending()

    def abort(self) -> None:
        for c in self._consumers:
            c.error = c.error or RuntimeError("aborted")
            while True:  # make room so the stop marker fits, dropping what was queued
                try:
                    c.q.put_nowait(_STOP)
                    break
                except queue.Full:
                    try:
                        c.q.get_nowait()
                    except queue.Empty:
                        pass
        for c in self._consumers:
            c.thread.join(timeout=5)


def check_destination(dest: str | os.PathLike[str]) -> None:
    """Fail before any work if the destination's directory is missing or not writable."""
    from registry_tools.errors import UsageError

    parent = Path(dest).parent if str(Path(dest).parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {dest}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {dest}: directory {parent} is not writable")


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


LAYOUT_NAMES = {"oci-layout", "index.json", "blobs"}


def check_layout_destination(dest: str | os.PathLike[str]) -> None:
    """An OCI layout destination may be new, an empty directory, or an OCI layout: nothing else
    is ever replaced (a mistyped -o must not wipe a project)."""
    from registry_tools.errors import UsageError

    check_destination(dest)
    path = Path(dest)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        raise UsageError(f"{dest} exists and is not a directory; refusing to replace it with an OCI layout")
    names = set(os.listdir(path))
    if names and not ("oci-layout" in names and names <= LAYOUT_NAMES):
        raise UsageError(f"{dest} exists and is not an OCI layout (it holds {', '.join(sorted(names)[:3])}"
                         f"{' …' if len(names) > 3 else ''}); refusing to replace it: name a new or empty directory")


class AtomicDir:
    """A temporary directory beside `dest`; commit() swaps it into place (over an empty
    directory or an old layout only: see check_layout_destination)."""

    def __init__(self, dest: str | os.PathLike[str]):
        check_layout_destination(dest)
        self.dest = Path(dest)
        parent = self.dest.parent if str(self.dest.parent) else Path(".")
        if not parent.is_dir():
            raise FileNotFoundError(f"directory {parent} does not exist")
        self.tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{self.dest.name}.", suffix=".part"))
        os.chmod(self.tmp, 0o755)

    def commit(self) -> None:
        check_layout_destination(self.dest)  # again: it may have changed while we worked
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


WRITE_BEHIND = 32 << 20  # a file being written starts its writeback every this many bytes
_ADVISE = getattr(os, "posix_fadvise", None)


def drop_cached(fd: int, start: int = 0, length: int = 0) -> None:
    """Done with these pages for now (length 0: to the end): Linux starts the writeback of dirty
    ones and drops clean ones from the page cache, so the pages of a large transfer are
    reused instead of new ones being touched (new pages cost more, on virtual machines most).
    Advice only: nothing waits, nothing changes in the file, a file system may ignore it."""
    if _ADVISE is None:
        return
    try:
        _ADVISE(fd, start, length, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


@contextmanager
def replacing(path: Path, mode: int = 0o644, tmp_dir: Path | None = None) -> Iterator[IO[bytes]]:
    """A file that replaces `path` when the block ends without error, and vanishes otherwise.

    It is written in `tmp_dir` (default: beside `path`, which must be on the same filesystem)
    and renamed into place, so readers never see half a file.
    """
    fd, tmp = tempfile.mkstemp(dir=tmp_dir or path.parent, prefix=f".{path.name[:16]}.")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: Path, obj: object, mode: int = 0o644, **dump_args: object) -> None:
    """Write JSON to `path` through `replacing`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with replacing(path, mode) as f:
        f.write(json.dumps(obj, **dump_args).encode())  # type: ignore[arg-type]
