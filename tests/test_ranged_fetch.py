"""A big blob on a slow connection is fetched as parallel Range requests, verified as one stream.

A scripted registry (pytest-httpserver, threaded) serves a 32 MiB blob, paced per answer as
a link that caps each connection, and says which ranges were asked for and how many
answers were in flight at once; every request resumes, fails and stops as a whole
download does; a registry that ignores Range is asked once, a fast one once. A real
registry behind a paced relay gives the same bytes with ranges as without.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from werkzeug.wrappers import Request, Response

from registry_tools.api.pull import PullOptions, pull_image
from registry_tools.errors import DigestMismatch
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest
from registry_tools.model.reference import parse
from registry_tools.registry.client import RetryPolicy, TransportOptions
from registry_tools.registry import ranges
from registry_tools.registry.ranges import MIN_TAIL, RANGES_FROM, piece_size
from registry_tools.session import Session

from .helpers import interrupt
from .support import imagegen
from .support.throttle import ThrottleRelay

BIG = os.urandom(RANGES_FROM)
STEP = 1 << 16  # what the scripted registry sends at a time
SLOW = 0.01  # seconds between its sends on a slow link: about 6.5 MB/s an answer


class RangeRegistry:
    """One image whose only layer is BIG (uncompressed), at /v2/x/y, answering Range requests for
    it; `pace`: seconds between sends; `stall_after`: each answer stops sending after so many
    bytes (until the test ends)."""

    def __init__(self, server, pace: float = SLOW, ignore_range: bool = False, stall_after: int | None = None,
                 blob: bytes = BIG, step: int = STEP):
        self.lay = imagegen.Layout()
        self.data = blob
        self.step = step
        self.big = self.lay.add(imagegen.Blob(imagegen.LAYER_TYPES["none"], blob))
        self.image = self.lay.image([(self.big, self.big.digest)])
        self.pace = pace
        self.ignore_range = ignore_range
        self.stall_after = stall_after
        self.asked: list[tuple[int, int] | None] = []  # [start, end) of each GET of the big blob
        self.damage: set[int] = set()  # which GETs (0: the first) get one wrong byte
        self.cut: set[int] = set()  # which GETs are cut halfway
        self.in_flight = self.most = 0
        self.two_in_flight = threading.Event()
        self.over = threading.Event()
        self._lock = threading.Lock()
        self.server = server
        server.expect_request(re.compile(r"^/v2/.*$")).respond_with_handler(self.handle)

    @property
    def ref(self) -> str:
        return f"{self.server.host}:{self.server.port}/x/y@{self.image.digest}"

    def source(self, session: Session):
        return session.source(parse(f"{self.server.host}:{self.server.port}/x/y"))

    def descriptor(self) -> mf.Descriptor:
        return mf.Descriptor(self.big.media_type, Digest.parse(self.big.digest), len(self.data))

    def handle(self, request: Request) -> Response:
        if request.path == "/v2/":
            return Response("{}", content_type="application/json")
        digest = request.path.rsplit("/", 1)[-1]
        data = self.lay.blobs.get(digest)
        if data is None:
            return Response(json.dumps({"errors": [{"code": "BLOB_UNKNOWN"}]}), status=404)
        if "/manifests/" in request.path:
            return Response(data, content_type=json.loads(data)["mediaType"])
        if digest != self.big.digest:
            return Response(data, content_type="application/octet-stream")
        return self._big(request.headers.get("Range"))

    def _big(self, asked: str | None) -> Response:
        size = len(self.data)
        start, end, status, headers = 0, size, 200, {}
        if asked and not self.ignore_range:
            first, last = asked.removeprefix("bytes=").split("-")
            start, end, status = int(first), int(last) + 1 if last else size, 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        with self._lock:
            n = len(self.asked)
            self.asked.append((start, end) if asked else None)
        body = bytearray(self.data[start:end])
        if n in self.damage:
            body[len(body) // 3] ^= 0x01

        def chunks():
            with self._lock:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
                if self.in_flight >= 2:
                    self.two_in_flight.set()
            try:
                for i in range(0, len(body), self.step):
                    if n in self.cut and i >= len(body) // 2:
                        raise ConnectionResetError("cut by the test")
                    if self.stall_after is not None and i >= self.stall_after:
                        self.over.wait(60)
                        return
                    yield bytes(body[i:i + self.step])
                    if self.pace:
                        time.sleep(self.pace)
            finally:
                with self._lock:
                    self.in_flight -= 1
        headers["Content-Length"] = str(len(body))
        return Response(chunks(), status=status, headers=headers, content_type="application/octet-stream")

    def pieces(self) -> list[tuple[int, int]]:
        """The ranges the lanes asked for, in order (the first request's is the whole blob)."""
        return sorted(a for a in self.asked[1:] if a is not None)


def session(tmp_path: Path, jobs: int = 4, parts: int = 4, name: str = "cache") -> Session:
    return Session(cache_dir=str(tmp_path / name), transport=TransportOptions(timeout=10),
                   retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1), concurrency=jobs, range_parts=parts)


def cached(s: Session, digest: str) -> bytes | None:
    path = s.cache.path(Digest.parse(digest))
    return path.read_bytes() if path.exists() else None


@pytest.fixture
def open_streams(monkeypatch):
    """How many blob requests the client has open at once, at most (counted where it opens and
    closes them: the server may go on sending a body the client stopped reading)."""
    count = {"now": 0, "most": 0}
    lock = threading.Lock()

    class Counted(ranges.BlobStream):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            with lock:
                count["now"] += 1
                count["most"] = max(count["most"], count["now"])
            self._counted = True

        def close(self):
            with lock:
                if getattr(self, "_counted", False):
                    self._counted = False
                    count["now"] -= 1
            super().close()

    monkeypatch.setattr(ranges, "BlobStream", Counted)
    return count


def test_a_slow_connection_is_joined_by_lanes_taking_pieces_in_order(threaded_server, tmp_path, open_streams):
    reg = RangeRegistry(threaded_server)
    with session(tmp_path) as s:
        assert reg.source(s).fetch_blob(reg.descriptor(), "big blob")
        assert cached(s, reg.big.digest) == BIG
    assert reg.asked[0] == (0, len(BIG))  # all of it on one connection first
    pieces = reg.pieces()
    at, step = pieces[0][0], piece_size(len(BIG), 4)
    assert 0 < at < step  # split soon: it was slow
    # in order, end to end, each at most a step; near the end what is left is shared (not under
    # MIN_TAIL but the last), so the lanes end together
    assert [a for a, _ in pieces[1:]] == [b for _, b in pieces[:-1]] and pieces[-1][1] == len(BIG)
    sizes = [b - a for a, b in pieces]
    assert all(n <= step for n in sizes) and sizes == sorted(sizes, reverse=True)
    assert all(n >= MIN_TAIL for n in sizes[:-1]) and sizes[-1] < step
    assert open_streams["most"] == 4, f"at most {open_streams['most']} requests were open at once"


def test_each_lane_takes_one_of_the_jobs(threaded_server, tmp_path, open_streams):
    reg = RangeRegistry(threaded_server)
    with session(tmp_path, jobs=2) as s:
        reg.source(s).fetch_blob(reg.descriptor(), "big blob")
        assert cached(s, reg.big.digest) == BIG
    assert len(reg.asked) > 2 and open_streams["most"] == 2


def test_a_wrong_byte_in_one_range_fails_the_digest_and_nothing_is_cached(threaded_server, tmp_path):
    reg = RangeRegistry(threaded_server)
    reg.damage.add(2)  # a lane's piece
    with session(tmp_path) as s, pytest.raises(DigestMismatch):
        reg.source(s).fetch_blob(reg.descriptor(), "big blob")
    assert len(reg.asked) > 2
    assert not any((tmp_path / "cache" / "blobs" / "sha256").iterdir())
    assert not any((tmp_path / "cache" / "tmp").iterdir())


def test_a_cut_range_resumes_where_it_broke(threaded_server, tmp_path):
    reg = RangeRegistry(threaded_server)
    reg.cut.add(1)  # the first lane's first piece
    with session(tmp_path) as s:
        reg.source(s).fetch_blob(reg.descriptor(), "big blob")
        assert cached(s, reg.big.digest) == BIG
    start, end = reg.asked[1]
    assert [a for a in reg.asked[2:] if start < a[0] < end] == [(start + (end - start) // 2, end)]


def test_a_registry_ignoring_range_is_asked_once(threaded_server, tmp_path):
    reg = RangeRegistry(threaded_server, ignore_range=True)
    with session(tmp_path) as s:
        reg.source(s).fetch_blob(reg.descriptor(), "big blob")
        assert cached(s, reg.big.digest) == BIG
    assert reg.asked == [(0, len(BIG))]  # asked for a range, answered with the whole blob: nothing more


def test_a_fast_connection_is_left_alone(threaded_server, tmp_path):
    blob = BIG + BIG[::-1]  # 64 MiB at about 128 MiB/s (4x SPLIT_BELOW): half a second, judged on the way
    reg = RangeRegistry(threaded_server, pace=1 / 128, blob=blob, step=1 << 20)
    with session(tmp_path) as s:
        reg.source(s).fetch_blob(reg.descriptor(), "big blob")
        assert cached(s, reg.big.digest) == blob
    assert reg.asked == [(0, len(blob))]


def test_one_part_is_one_request_without_range(threaded_server, tmp_path):
    reg = RangeRegistry(threaded_server)
    with session(tmp_path, parts=1) as s:
        reg.source(s).fetch_blob(reg.descriptor(), "big blob")
        assert cached(s, reg.big.digest) == BIG
    assert reg.asked == [None]


def test_ctrl_c_stops_a_ranged_download_within_a_second(threaded_server, tmp_path):
    reg = RangeRegistry(threaded_server, stall_after=4 << 20)
    out = tmp_path / "out.tar"
    proc = subprocess.Popen([sys.executable, "-m", "registry_tools", "pull", reg.ref, "-o", str(out),
                             "--cache-dir", str(tmp_path / "cache")], stderr=subprocess.PIPE, text=True)
    try:
        assert reg.two_in_flight.wait(30), "no lane started"
        time.sleep(0.3)
        took, err = interrupt(proc, "pull")
    finally:
        reg.over.set()
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert took < 2.0, f"exit took {took:.1f}s after Ctrl-C"
    assert "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert not any((tmp_path / "cache" / "blobs" / "sha256").glob(reg.big.digest.split(":")[1]))


def test_a_big_layer_from_a_real_registry_is_the_same_through_lanes(target, tmp_path):
    from .support.registry import skopeo_push_layout

    lay = imagegen.Layout()
    big, big_diff = lay.layer({"big.bin": os.urandom(RANGES_FROM + (3 << 20))}, "gzip")  # random: stays big
    small, small_diff = lay.layer({"etc/hello": b"hello\n"}, "gzip")
    manifest = lay.image([(big, big_diff), (small, small_diff)])
    lay.tag(manifest, "v1")
    skopeo_push_layout(lay.write(tmp_path / "layout"), "v1", f"{target.host}/big/img:v1", all_images=False)
    relay = ThrottleRelay(target.host, 10e6).start()  # 10 MB/s a connection
    try:
        results, requests = [], []
        for host, parts in ((relay.host, 4), (target.host, 1)):
            with session(tmp_path, parts=parts, name=f"cache{parts}") as s:
                out = tmp_path / f"out{parts}.tar"
                ref = f"{host}/big/img@{manifest.digest}"
                results.append(pull_image(PullOptions(ref, out, final_image_name="big/img"), s))
                requests.append(s.registry(host).stats["GET blob"])
                assert cached(s, big.digest) == big.data
    finally:
        relay.stop()
    assert results[0].sha256 == results[1].sha256
    assert (tmp_path / "out4.tar").read_bytes() == (tmp_path / "out1.tar").read_bytes()
    assert requests[0] > requests[1] + 2  # the big blob in pieces through the relay, whole without it


def test_range_parts_must_be_at_least_one(tmp_path):
    from registry_tools.cli import main

    assert main(["pull", "localhost:5000/x/y@sha256:" + "0" * 64, "-o", str(tmp_path / "o.tar"),
                 "--range-parts", "0"]) == 2
