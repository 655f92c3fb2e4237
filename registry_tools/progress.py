"""Progress on stderr: a bar on a terminal, plain lines otherwise, nothing when quiet."""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from registry_tools import words
from registry_tools.engine import Progress
from registry_tools.model.digest import Digest


class StderrProgress(Progress):
    """A bar on a terminal (never elsewhere): bytes moved of the total to move, drawn once the
    total is known; a line per layer or blob only with `verbose`; nothing at all when `quiet`."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, verbose: bool = False):
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._lock = threading.Lock()
        self._total: int | None = None  # None: no transfer under way (not started, or ended)
        self._done = 0
        self._drawn = False  # the bar stands on the terminal's last line
        self._last = 0.0
        self._started = time.monotonic()

    def say(self, message: str) -> None:
        if self.verbose:
            with self._lock:
                self._erase()
                self.stream.write(message + "\n")
                self.stream.flush()

    def start(self, total: int, count: int) -> None:
        with self._lock:
            self._total, self._done, self._started, self._last = total, 0, time.monotonic(), 0.0
        self.say(f"moving {words.count(count, 'blob')}, {words.size(total)}")

    def advance(self, n: int) -> None:
        if self.quiet or not self.tty:
            return
        with self._lock:
            if not self._total:  # bytes before the total is known (a config read first) are not drawn
                return
            self._done += n
            now = time.monotonic()
            complete = self._done >= self._total
            if now - self._last < 0.1 and not complete:
                return
            self._last = now
            frac = min(1.0, self._done / self._total)
            bar = "#" * int(frac * 30)
            rate = self._done / max(now - self._started, 1e-6)
            tail = "writing…" if complete else f"{words.size(rate)}/s"
            self.stream.write(f"\r\033[K[{bar:<30}] {words.size(self._done)} / {words.size(self._total)}  {tail}")
            self.stream.flush()
            self._drawn = True

    def blob_done(self, digest: Digest, size: int, cached: bool) -> None:
        self.say(f"{'cached' if cached else 'fetched'} {digest} ({words.size(size)})")

    def finish(self) -> None:
        """The transfer ended (or stopped: Ctrl-C, a failure): the bar goes, so what is printed next
        starts on a line of its own; bytes still counted after this are not drawn."""
        with self._lock:
            self._total = None
            self._erase()

    def _erase(self) -> None:
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False


class _ImageProgress(Progress):
    """One image's bytes in a sync: its own line under the overall bar."""

    def __init__(self, owner: "SyncProgress", task: Any):
        self.owner = owner
        self.task = task

    def start(self, total: int, count: int) -> None:
        if self.owner.bars is not None and self.task is not None:
            self.owner.bars.update(self.task, total=total, visible=True)

    def advance(self, n: int) -> None:
        if self.owner.bars is not None and self.task is not None:
            self.owner.bars.advance(self.task, n)


class SyncProgress:
    """Many transfers at once: on a terminal an overall bar and one line per image being copied
    (rich draws them, on stderr); otherwise one plain line per finished image; nothing when quiet."""

    def __init__(self, count: int, quiet: bool = False, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bars: Any = None
        self._tasks: dict[int, Any] = {}
        self._lock = threading.Lock()
        if not quiet and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress as Bars, ProgressColumn, TextColumn
            from rich.text import Text

            class Amount(ProgressColumn):
                bytes_column = DownloadColumn()

                def render(self, task: Any) -> Text:
                    if task.fields.get("images"):
                        return Text(f"{int(task.completed)}/{int(task.total or 0)} images")
                    return self.bytes_column.render(task)

            self.bars = Bars(TextColumn("{task.description}"), BarColumn(), Amount(),
                             console=Console(file=self.stream), transient=True)
            self._overall = self.bars.add_task("sync", total=count, images=True)
            self.bars.start()

    def image(self, key: int, name: str) -> Progress:
        if self.bars is None:
            return Progress()
        with self._lock:
            task = self.bars.add_task(f"  {name}", total=None, visible=False)
            self._tasks[key] = task
        return _ImageProgress(self, task)

    def done(self, key: int, line: str) -> None:
        with self._lock:
            task = self._tasks.pop(key, None)
            if self.bars is not None:
                if task is not None:
                    self.bars.remove_task(task)
                self.bars.advance(self._overall, 1)
                # soft wrap: the terminal folds a long line, rich never breaks one (a digest) at a width it guessed
                self.bars.console.print(line, highlight=False, markup=False, soft_wrap=True)
            elif not self.quiet:
                self.stream.write(line + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self.bars is not None:
            self.bars.stop()
