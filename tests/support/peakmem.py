"""A child's own peak memory. ru_maxrss from wait4 is no good for that: on Linux a child
keeps the high-water mark of the process it was forked from, across exec."""
from __future__ import annotations

import threading


def vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakWatcher:
    """Polls a running child's VmHWM (the peak of its own, post-exec memory)."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, vm_hwm_kb(self.pid))
            self._stop.wait(interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kb
