"""Sockets a cancellation can cut off.

A thread blocked in a socket's read or write (an upload whose body the registry stopped
reading, an answer that never comes) cannot look at its cancellation until its timeout
ends it, a minute later. So every socket httpx uses comes from `abortable`'s network
backend, whose streams tell the request being sent on this thread (its `Watch`) which
socket it uses; the watch shuts that socket down when the request's cancellation is set,
and the blocked read or write fails at once (closing the descriptor would not wake it).
"""
from __future__ import annotations

import socket
import ssl
import threading
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import httpcore
import httpx

from registry_tools.cancel import Cancel

STOP_GRACE = 0.5  # seconds a request has to finish once its part of the operation stopped
_current = threading.local()  # the Watch of the request this thread sends, or waits for the answer of


def _shut(sock: socket.socket) -> None:
    """Shut the connection down under any TLS layer (which is left alone: another thread is in it)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # closed already


class Watch:
    """The socket one request uses, shut down the moment the operation is cancelled, or
    STOP_GRACE after the part of it the request's thread works for stops: what is nearly done
    may finish (a session a POST created is not lost; a clean-up such as a failed upload's
    DELETE, started after the stop, goes out), what is blocked on the wire is cut off.
    `end` when the request is over (its answer closed, or it failed)."""

    def __init__(self, operation: Cancel, part: Cancel | None):
        self.sock: socket.socket | None = None
        self.aborted = False
        self.done = False
        self._timer: threading.Timer | None = None
        self._hooks = [operation.on_set(self.abort)]
        if part is not None and part is not operation:
            self._hooks.append(part.on_set(self._abort_soon))

    def use(self, sock: socket.socket | None) -> None:
        self.sock = sock
        if self.aborted and sock is not None:
            _shut(sock)

    def abort(self) -> None:
        if self.done:  # the request is over: its connection may serve another by now
            return
        self.aborted = True
        if self.sock is not None:
            _shut(self.sock)

    def _abort_soon(self) -> None:
        self._timer = threading.Timer(STOP_GRACE, self.abort)
        self._timer.daemon = True
        self._timer.start()

    def end(self) -> None:
        for remove in self._hooks:
            remove()
        self.done = True
        if self._timer is not None:
            self._timer.cancel()


@contextmanager
def watching(watch: Watch) -> Iterator[None]:
    """Within the block, the sockets this thread reads and writes are the watched request's."""
    saved = getattr(_current, "watch", None)
    _current.watch = watch
    try:
        yield
    finally:
        _current.watch = saved


class _Stream(httpcore.NetworkStream):
    """httpcore's socket stream, telling the watched request which socket it reads or writes."""

    def __init__(self, inner: httpcore.NetworkStream, sock: socket.socket | None = None):
        self._inner = inner
        self._sock = inner.get_extra_info("socket") or sock

    def _watched(self) -> None:
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.use(self._sock)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._watched()
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._watched()
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        self._watched()
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._sock)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend):
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
                            ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def abortable(transport: httpx.HTTPTransport) -> httpx.HTTPTransport:
    """httpx's socket transport, its sockets made through `_Backend`. httpx has no argument for
    httpcore's (public) network backend, so it is set on the connection pool httpx made
    (direct, or through a proxy: each makes its connections with the pool's backend)."""
    pool = transport._pool
    pool._network_backend = _Backend(pool._network_backend)
    return transport
