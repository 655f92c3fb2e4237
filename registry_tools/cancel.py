"""One cancellation path for an operation: every wait, sleep and read loop asks it.

The session holds the root; a part of the work that may stop on its own (the downloads
of a failed write, the uploads of a failed push) takes a child, which stops when it is
set or when its parent is. Ctrl-C closes the session, which sets the root: retry sleeps
wake at once, workers stop before their next request or chunk, and nothing new starts.

What cannot ask (a thread blocked in a socket's read or write) is told: a hook registered
with `on_set` runs when the cancellation is set, and the transport's hook shuts the
request's socket down. A thread working for a part of the operation says which with
`scope()`, so its requests stop with that part's cancellation.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from registry_tools.errors import Interrupted


POLL = 0.1  # how often a child's sleep looks at its parent
_HOOKS = threading.Lock()  # guards every cancellation's hooks
_scope = threading.local()  # the cancellation the work of this thread stops with (see Cancel.scope)


class _Hook:
    """A callable run at most once: when a cancellation is set, unless it was taken back first."""

    def __init__(self, fn: Callable[[], None]):
        self.fn = fn
        self.spent = False

    def fire(self) -> None:
        with _HOOKS:
            if self.spent:
                return
            self.spent = True
        self.fn()


class Cancel:
    def __init__(self, parent: "Cancel | None" = None) -> None:
        self._event = threading.Event()
        self._parent = parent
        self._reason = "cancelled"
        self._hooks: set[_Hook] = set()

    def child(self) -> "Cancel":
        """A cancellation of part of the work: set on its own, or with this one."""
        return Cancel(self)

    @property
    def reason(self) -> str:
        if not self._event.is_set() and self._parent is not None and self._parent.is_set():
            return self._parent.reason
        return self._reason

    def set(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self._reason = reason
        self._event.set()
        with _HOOKS:
            hooks, self._hooks = self._hooks, set()
        for hook in hooks:
            hook.fire()

    def is_set(self) -> bool:
        return self._event.is_set() or (self._parent is not None and self._parent.is_set())

    def check(self) -> None:
        """Raise Interrupted if the operation was cancelled."""
        if self.is_set():
            raise Interrupted(self.reason)

    def sleep(self, seconds: float) -> None:
        """Sleep, waking (and raising Interrupted) the moment the operation is cancelled."""
        deadline = time.monotonic() + max(0.0, seconds)
        while (left := deadline - time.monotonic()) > 0:
            step = left if self._parent is None else min(left, POLL)
            if self._event.wait(step) or self.is_set():
                raise Interrupted(self.reason)
        self.check()

    def on_set(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Run `fn` once when this cancellation (or an ancestor) is set, on the thread that sets
        it; at once if it is set already. Returns what takes `fn` back (it will not run after)."""
        hook = _Hook(fn)
        chain: list[Cancel] = []
        node: Cancel | None = self
        while node is not None:
            chain.append(node)
            node = node._parent
        with _HOOKS:
            for c in chain:
                c._hooks.add(hook)
        if self.is_set():  # set meanwhile (its hooks may have been taken already)
            hook.fire()

        def remove() -> None:
            with _HOOKS:
                hook.spent = True
                for c in chain:
                    c._hooks.discard(hook)
        return remove

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Within the block, the registry requests of this thread stop with this cancellation
        (a descendant of the session's): one blocked on the wire when it is set is cut off."""
        saved = getattr(_scope, "cancel", None)
        _scope.cancel = self
        try:
            yield
        finally:
            _scope.cancel = saved


def current() -> Cancel | None:
    """The cancellation this thread's work is scoped to (`Cancel.scope`), if any."""
    return getattr(_scope, "cancel", None)
