"""A layer's diff_id checked from the bytes an archive's ordered hash reads back.

The positional writer (formats.tar) hashes the whole archive in order behind its writers;
the smaller layers beside a dominant one are read there only at the end, once the big
layer before them is written. Their diff_ids are checked on those same reads, each on a
thread of its own through the one verifying reader (store.blobs.LayerCheck), instead of
while they decompress: the two hashes share one read, on the core that is idle then.
"""
from __future__ import annotations

import queue
import threading

from registry_tools.model.digest import ReaderBase
from registry_tools.store.blobs import LayerCheck

_ABORTED = object()  # the write stopped: a check's thread ends without judging the layer


class _Aborted(Exception):
    pass


class _Chunks(ReaderBase):
    """What the ordered hash hands on, as a stream (None ends it)."""

    def __init__(self, q: "queue.Queue[object]"):
        self._q = q
        self._ended = False

    def read(self, n: int = -1) -> bytes:
        if self._ended:
            return b""
        chunk = self._q.get()
        if chunk is None or chunk is _ABORTED:
            self._ended = True
            if chunk is _ABORTED:
                raise _Aborted()
            return b""
        return chunk  # type: ignore[return-value]  # a memoryview of written bytes: hashed, not kept


class LaterCheck:
    """A layer's diff_id checked on a thread of its own from the bytes the archive's ordered hash
    reads (no second read of the file), through the one verifying reader (LayerCheck)."""

    def __init__(self, check: LayerCheck, start: int):
        self.check = check
        self.start = start
        self.end = start + check.size
        self.error: BaseException | None = None
        self._q: "queue.Queue[object]" = queue.Queue(maxsize=16)
        self._lock = threading.Lock()  # feed and stop: nothing is put after the end
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="diff_id", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        reader = _Chunks(self._q)
        try:
            self.check.verify(reader)
        except _Aborted:
            return
        except BaseException as e:  # noqa: B036 - raised again by whoever closes the hash
            self.error = e
        try:
            while reader.read():  # the rest, so the hash never waits on a check that has ended
                pass
        except _Aborted:
            pass

    def feed(self, pos: int, chunk: "memoryview | bytes") -> None:
        """The bytes at `pos` (the part within the layer goes to the check; its end ends it)."""
        a, b = max(pos, self.start), min(pos + len(chunk), self.end)
        with self._lock:
            if self._ended:
                return
            if a < b:
                self._q.put(memoryview(chunk)[a - pos:b - pos])
            if pos + len(chunk) >= self.end:
                self._ended = True
                self._q.put(None)

    def stop(self) -> None:
        """The write stopped: the thread ends, and nothing is judged."""
        with self._lock:
            if not self._ended:
                self._ended = True
                self._q.put(_ABORTED)

    def result(self) -> BaseException | None:
        """The check's verdict, once the hash has fed the whole layer."""
        self._thread.join()
        return self.error
