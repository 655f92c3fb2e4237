"""The one worker pool of an operation, and its one transfer limit.

Everything an operation does at once runs in its `Workers`: layer downloads and blob
uploads, layers being packed, the producers of an archive's entries, the images of a
lock file or a sync. There is one thread pool (threads made as work needs them, then
reused), one limit on concurrent blob transfers (`--jobs`, taken with `transfer()`
around each download or upload, whichever part of the operation does it; the extra lanes
of a blob fetched in ranges take a slot only as `spare`, when no other transfer waits for
one) and one cancellation (the session's).

Work is submitted through a `Group`: one part of the operation (the downloads of one
image, the uploads of one push, the packing of a build) with its own bound on how many
of its tasks run at once. A group holds back what is over its bound itself instead of
queueing it in the pool, so a task never waits in the pool behind another group's tasks:
the images of a sync, each waiting for its own downloads, cannot starve those downloads
of threads. Leaving a group with an error cancels what has not started.
"""
from __future__ import annotations

import os
import sys
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator, TypeVar

from registry_tools.cancel import POLL, Cancel, current
from registry_tools.errors import Interrupted

T = TypeVar("T")
MAX_THREADS = 256  # far above what the groups' bounds let run at once: threads are made as needed
# Blob transfers at once by default (--jobs): skopeo's six parallel layer downloads. Behind a link that caps
# each connection the pull is bound by how many there are; on a fast link six cost no more than four.
JOBS = 6
GIVE_WAY = 5  # how much lower (in nice steps) work that gives way runs: a third of the CPU share, not none


class Workers:
    """An operation's pool: `jobs` blob transfers at a time, the work itself in groups."""

    def __init__(self, jobs: int, cancel: Cancel | None = None):
        self.jobs = max(1, jobs)
        self.cancel = cancel or Cancel()
        self._slots = threading.Condition()
        self._free = self.jobs
        self._wanted = 0  # transfers waiting for a slot that are not spare
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def group(self, limit: int | None = None) -> "Group":
        """A part of the operation running at most `limit` tasks at once (default: `jobs`)."""
        return Group(self, max(1, limit or self.jobs))

    @contextmanager
    def transfer(self, spare: bool = False) -> Iterator[None]:
        """Hold one of the operation's `jobs` transfer slots; the wait for one ends if the operation is cancelled.
        `spare`: extra help for a transfer that holds a slot already (a lane of a blob fetched in ranges),
        taken only when no other transfer is waiting for one, so the help never holds a blob back."""
        with self._slots:
            self._wanted += not spare
            try:
                while self._free == 0 or (spare and self._wanted):
                    self.cancel.check()
                    self._slots.wait(POLL)
            finally:
                self._wanted -= not spare
            self._free -= 1
        try:
            yield
        finally:
            with self._slots:
                self._free += 1
                self._slots.notify_all()

    def _start(self, task: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise Interrupted(self.cancel.reason if self.cancel.is_set() else "the operation has ended")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="work")
            pool = self._pool
        pool.submit(task)

    def close(self) -> None:
        """Nothing new starts; what runs stops at its next cancellation check."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class Group:
    """Tasks of one part of an operation, at most `limit` running at once; the rest wait their turn here."""

    def __init__(self, workers: Workers, limit: int):
        self.workers = workers
        self.limit = limit
        self._lock = threading.Lock()
        self._running = 0
        self._waiting: deque[tuple[Future[Any], Callable[[], Any]]] = deque()
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        future: Future[T] = Future()
        call = (lambda: fn(*args)) if args else fn
        with self._lock:
            self.futures.append(future)
            if self._running >= self.limit:
                self._waiting.append((future, call))
                return future
            self._running += 1
        self._launch(future, call)
        return future

    def _launch(self, future: "Future[Any]", call: Callable[[], Any]) -> None:
        def task() -> None:
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(call())
                    except BaseException as e:  # noqa: B036 - handed to whoever waits for it
                        future.set_exception(e)
            finally:
                self._next()
        try:
            self.workers._start(task)
        except Interrupted as e:  # the operation has ended: nothing new starts
            if future.set_running_or_notify_cancel():  # (unless it was cancelled already)
                future.set_exception(e)
            self._next()

    def _next(self) -> None:
        with self._lock:
            if not self._waiting:
                self._running -= 1
                return
            future, call = self._waiting.popleft()
        self._launch(future, call)

    def cancel_waiting(self) -> None:
        """Tasks that have not started never will."""
        with self._lock:
            waiting = list(self._waiting)
        for future, _ in waiting:
            future.cancel()

    def first_error(self) -> BaseException | None:
        return next((f.exception() for f in self.futures if f.done() and not f.cancelled()
                     and f.exception() is not None), None)

    def wait_for(self, target: "Future[T]") -> T:
        """`target`'s result; a failure of any other task of the group is raised as soon as it happens."""
        while not target.done():
            error = self.first_error()
            if error is not None:
                raise error
            wait([f for f in self.futures if not f.done()], return_when=FIRST_COMPLETED)
        return target.result()

    def join(self) -> None:
        """Wait for every task; the first failure is raised as soon as it happens (the rest are cancelled)."""
        try:
            seen = 0
            while seen < len(self.futures):  # tasks may submit more tasks to the group
                batch = self.futures[seen:]
                seen += len(batch)
                wait(batch, return_when=FIRST_EXCEPTION)
                error = self.first_error()
                if error is not None:
                    raise error
        except BaseException:
            self.cancel_waiting()
            raise

    def drain(self) -> None:
        """Wait for the tasks that started to end (after a failure: none of them runs on unseen)."""
        self.cancel_waiting()
        wait(list(self.futures))

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.cancel_waiting()
        else:
            self.join()


def giving_way(fn: Callable[[], T]) -> T:
    """`fn`, run on a thread of its own at a lower CPU priority (nice +5: the nice value is a
    thread's own on Linux), and waited for. For work that should give way to an operation's
    critical path while every core is busy, and use a core that is free: a pulled archive's
    smaller layers beside the one that holds most of the image (docs/performance.md). A thread
    `fn` starts inherits the lower priority: it is for work that starts none (the pool's
    threads are never lowered). Where threads have no priority of their own, `fn` simply runs
    here."""
    if not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        return fn()
    out: list[T] = []
    error: list[BaseException] = []
    scope = current()

    def run() -> None:
        try:
            me = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + GIVE_WAY))
        except OSError:
            pass  # advice only: the work runs either way
        try:
            with scope.scope() if scope is not None else nullcontext():
                out.append(fn())
        except BaseException as e:  # noqa: B036 - raised again on the thread that waits
            error.append(e)

    thread = threading.Thread(target=run, name="giving-way", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return out[0]
