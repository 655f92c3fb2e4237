"""One cancellation path: a child stops with its parent, within about a poll, and alone when set."""
from __future__ import annotations

import threading
import time

import pytest

from registry_tools.cancel import Cancel
from registry_tools.errors import Interrupted


def test_a_child_sleep_wakes_when_the_parent_is_set():
    root = Cancel()
    child = root.child()
    threading.Timer(0.2, root.set, args=("ctrl-c",)).start()
    t = time.monotonic()
    with pytest.raises(Interrupted, match="ctrl-c"):
        child.sleep(30)
    assert time.monotonic() - t < 1.0


def test_a_child_set_alone_leaves_the_parent_running():
    root = Cancel()
    child = root.child()
    child.set("push stopped")
    assert child.is_set() and not root.is_set()
    with pytest.raises(Interrupted, match="push stopped"):
        child.check()
    root.check()
    root.sleep(0.01)
