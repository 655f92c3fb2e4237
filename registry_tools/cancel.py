"""One cancellation path for an operation: every wait, sleep and read loop asks it.

Ctrl-C (or a failure in one worker) sets it once; retry sleeps wake at once, workers stop
before their next request or chunk, and nothing new starts.
"""
from __future__ import annotations

import threading

from registry_tools.errors import Interrupted


class Cancel:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"

    def set(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise Interrupted if the operation was cancelled."""
        if self._event.is_set():
            raise Interrupted(self.reason)

    def sleep(self, seconds: float) -> None:
        """Sleep, waking (and raising Interrupted) the moment the operation is cancelled."""
        if self._event.wait(max(0.0, seconds)):
            raise Interrupted(self.reason)
