"""Scripted HTTP servers of the tests' own: pytest-httpserver on a free port, stopped at once."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from pytest_httpserver import HTTPServer


class OwnServer(HTTPServer):
    """A pytest-httpserver of one test's own (see conftest's `httpserver`), on a free port, quick to stop."""

    POLL = 0.05  # seconds between the server thread's looks at a stop (socketserver's default: 0.5)
    STOP_WAIT = 5.0  # the most a stop waits for a handler still answering (a stalled one, a trickle)

    def __init__(self, host: str = "localhost", threaded: bool = False):
        super().__init__(host=host, port=0, threaded=threaded)

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=self.POLL)

    def stop(self) -> None:
        """Stop serving and close the port at once; a handler still answering (a test's stalled
        one) ends on its own in its daemon thread, and never holds the next test."""
        self.clear()
        inner, thread = self.server, self.server_thread
        if inner is None or thread is None:
            return
        stopper = threading.Thread(target=inner.shutdown, daemon=True)
        stopper.start()
        stopper.join(self.STOP_WAIT)
        thread.join(0 if stopper.is_alive() else self.STOP_WAIT)
        inner.server_close()
        self.server = self.server_thread = None


@contextmanager
def own_server(host: str = "localhost", threaded: bool = False) -> Iterator[OwnServer]:
    """A started `OwnServer`, stopped (its port closed) when the block ends."""
    server = OwnServer(host, threaded)
    server.start()
    try:
        yield server
    finally:
        server.stop()
