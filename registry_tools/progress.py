"""Progress on stderr: a bar on a terminal, plain lines otherwise, nothing when quiet."""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from registry_tools.engine import Progress
from registry_tools.model.digest import Digest


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class StderrProgress(Progress):
    def __init__(self, quiet: bool = False, stream: TextIO | None = None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._lock = threading.Lock()
        self._total = 0
        self._done = 0
        self._last = 0.0
        self._started = time.monotonic()

    def say(self, message: str) -> None:
        if not self.quiet:
            with self._lock:
                if self.tty:
                    self.stream.write("\r\033[K")
                self.stream.write(message + "\n")
                self.stream.flush()

    def start(self, total: int, count: int) -> None:
        self._total, self._done, self._started = total, 0, time.monotonic()
        if not self.tty:
            self.say(f"fetching {count} layer(s), {human(total)}")

    def advance(self, n: int) -> None:
        if self.quiet or not self.tty:
            return
        with self._lock:
            self._done += n
            now = time.monotonic()
            complete = self._done >= self._total
            if now - self._last < 0.1 and not complete:
                return
            self._last = now
            frac = min(1.0, self._done / self._total) if self._total else 1.0
            bar = "#" * int(frac * 30)
            rate = self._done / max(now - self._started, 1e-6)
            tail = "writing…" if complete else f"{human(rate)}/s"
            self.stream.write(f"\r\033[K[{bar:<30}] {human(self._done)} / {human(self._total)}  {tail}")
            self.stream.flush()

    def blob_done(self, digest: Digest, size: int, cached: bool) -> None:
        if not self.tty:
            self.say(f"{'cached' if cached else 'fetched'} {digest} ({human(size)})")

    def finish(self) -> None:
        if self.tty and not self.quiet:
            with self._lock:
                self.stream.write("\r\033[K")
                self.stream.flush()
