"""A local TCP relay that paces each connection, as a link that caps every connection does.

Every connection accepted on the relay's port is relayed to the target; what the target
sends back is paced to `rate` bytes a second for that connection alone (requests go
through unpaced), so N connections move N times as much. Used by the ranged-fetch tests
and by bench/throttle_relay.py.
"""
from __future__ import annotations

import socket
import threading
import time

STEP = 64 * 1024  # bytes read from the target at a time


def _pump(src: socket.socket, dst: socket.socket, rate: float | None) -> None:
    """Copy src to dst until either side closes; `rate` (bytes/s): the most dst receives."""
    start, sent = time.monotonic(), 0
    try:
        while data := src.recv(STEP):
            dst.sendall(data)
            if rate:
                sent += len(data)
                ahead = start + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                elif ahead < -0.05:  # idle for a while (between answers): no burst to catch up
                    start, sent = time.monotonic(), 0
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve(conn: socket.socket, target: tuple[str, int], rate: float) -> None:
    try:
        upstream = socket.create_connection(target)
    except OSError:
        conn.close()
        return
    for s in (conn, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Small buffers towards the client, so what it sees is the pacing here, not a burst from the kernel.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * STEP)
    up = threading.Thread(target=_pump, args=(conn, upstream, None), daemon=True)
    up.start()
    _pump(upstream, conn, rate)
    up.join()
    conn.close()
    upstream.close()


class ThrottleRelay:
    """Relays 127.0.0.1:`port` to `target` (HOST:PORT), each connection paced to `rate` bytes/s."""

    def __init__(self, target: str, rate: float, port: int = 0):
        host, target_port = target.rsplit(":", 1)
        self.target = (host, int(target_port))
        self.rate = rate
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"

    def serve_forever(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            threading.Thread(target=_serve, args=(conn, self.target, self.rate), daemon=True).start()

    def start(self) -> "ThrottleRelay":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.close()
