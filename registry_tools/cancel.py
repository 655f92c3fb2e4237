"""One cancellation path for an operation: every wait, sleep and read loop asks it.

The session holds the root; a part of the work that may stop on its own (the downloads
of a failed write, the uploads of a failed push) takes a child, which stops when it is
set or when its parent is. Ctrl-C closes the session, which sets the root: retry sleeps
wake at once, workers stop before their next request or chunk, and nothing new starts.
"""
from __future__ import annotations

import threading
import time

from registry_tools.errors import Interrupted


POLL = 0.1  # how often a child's sleep looks at its parent


class Cancel:
    def __init__(self, parent: "Cancel | None" = None) -> None:
        self._event = threading.Event()
        self._parent = parent
        self._reason = "cancelled"

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
