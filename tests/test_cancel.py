"""One cancellation path: a child stops with its parent, within about a poll, and alone when set."""
from __future__ import annotations

import os
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


def test_a_hook_runs_once_when_an_ancestor_is_set_and_never_once_taken_back():
    root = Cancel()
    part = root.child()
    ran: list[str] = []
    part.on_set(lambda: ran.append("kept"))
    remove = part.on_set(lambda: ran.append("taken back"))
    remove()
    root.set("ctrl-c")
    part.set("again")
    assert ran == ["kept"]
    part.on_set(lambda: ran.append("late"))  # set already: at once
    assert ran == ["kept", "late"]


def test_a_scope_is_the_threads_own_and_ends_with_its_block():
    from registry_tools import cancel as cancellation

    part = Cancel().child()
    seen: list[object] = []
    with part.scope():
        worker = threading.Thread(target=lambda: seen.append(cancellation.current()))
        worker.start()
        worker.join()
        assert cancellation.current() is part
    assert cancellation.current() is None and seen == [None]


class StallingRegistry:
    """A registry that opens upload sessions and then, as a stuck registry does, stops reading
    each PATCH's body (and never answers it)."""

    def __init__(self) -> None:
        import socket

        self.stalled = threading.Event()
        self.release = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        f = conn.makefile("rb")
        try:
            while line := f.readline():
                method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (h := f.readline()) not in (b"\r\n", b""):
                    k, v = h.decode().split(":", 1)
                    headers[k.strip().lower()] = v.strip()
                if method == "PATCH":
                    self.stalled.set()
                    self.release.wait(60)  # reads nothing more: the client's write blocks
                    return
                f.read(int(headers.get("content-length") or 0))
                if path == "/v2/":
                    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
                elif method == "POST":
                    answer = (b"HTTP/1.1 202 Accepted\r\nLocation: /v2/x/y/blobs/uploads/" + os.urandom(4).hex().encode()
                              + b"\r\nContent-Length: 0\r\n\r\n")
                else:  # no blob is here yet; a DELETE of a session is answered too
                    answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                conn.sendall(answer)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.release.set()
        self.server.close()


def test_ctrl_c_stops_a_push_whose_registry_stopped_reading_the_body(tmp_path):
    """The upload's write is blocked in the socket: Ctrl-C still ends the push within about a second."""
    import subprocess
    import sys

    from .helpers import interrupt
    from .support import imagegen

    lay = imagegen.Layout()
    blob, diff = lay.layer({"big": os.urandom(24 << 20)}, "none")  # far more than the socket buffers hold
    lay.tag(lay.image([(blob, diff)]), "v1")
    lay.write(tmp_path / "layout")
    registry = StallingRegistry()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "registry_tools", "push", str(tmp_path / "layout"),
                                 f"127.0.0.1:{registry.port}/x/y:1", "--cache-dir", str(tmp_path / "cache")],
                                stderr=subprocess.PIPE, text=True)
        try:
            assert registry.stalled.wait(60), "the push never reached the upload"
            time.sleep(1.0)  # the write has filled the socket's buffers and blocks
            took, err = interrupt(proc, "push")
        finally:
            proc.kill()
            proc.wait()
    finally:
        registry.close()
    assert proc.returncode == 130, err
    assert took < 2.0, f"exit took {took:.1f}s after Ctrl-C"
    assert "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
