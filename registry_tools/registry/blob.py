"""Reading a blob from a registry: a file-like stream that resumes with Range after a cut.

It only moves bytes; what they must be is checked by the caller's VerifyingReader, and
the transport bounds the body near the blob's announced size. A stream may cover one span
of the blob (a Range request of a fetch in parallel parts: `registry.ranges`): it never
reads past the span's end, and a body that ends early is one more resume.
"""
from __future__ import annotations

import logging
from typing import Iterator

import httpx

from registry_tools.errors import NetworkError, SizeMismatch
from registry_tools.model.digest import Digest
from registry_tools.registry.client import Registry

log = logging.getLogger("registry_tools.blob")

CHUNK = 1 << 20  # handed on a megabyte at a time: fewer, larger steps for hashing, caching and decompressing
# Bytes past the announced size the transport lets through, so the reader names the overrun: a read
# gathers up to CHUNK (and holds one network chunk more) before the reader sees any of it.
SLACK = 2 * CHUNK


class BlobStream:
    """GET /v2/<repo>/blobs/<digest>, resuming from where a broken connection left off.

    `span` (start, end): only those bytes, asked for with Range. A registry that ignores
    Range answers the span from 0 with the whole blob: `whole` then says so, and the
    stream runs to the blob's end (a span further in answered so is refused).
    """

    def __init__(self, registry: Registry, repo: str, digest: Digest, size: int,
                 span: tuple[int, int] | None = None):
        self._reg = registry
        self._repo = repo
        self._digest = digest
        self._size = size
        self._span = span is not None
        self._offset, self._end = span or (0, size)
        self._start = self._offset
        self.whole = span is None  # the body is the blob from its start (Range ignored, or not asked)
        self._ends_here = True  # the body should end at `_end` (a span: as its Content-Range says)
        self._buf = b""
        self._resumes = 0
        self._resp: httpx.Response | None = None
        self._it: Iterator[bytes] | None = None
        self._what = f"blob {digest}" + (f" bytes {self._offset}-{self._end - 1}" if span else "")
        self._open(self._offset)

    def _open(self, offset: int) -> None:
        ranged = self._span and not self.whole
        if ranged:
            headers = {"Range": f"bytes={offset}-{self._end - 1}"}
        else:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
        # A span's first request may be answered with the whole blob; a resumed span never may.
        limit = (self._end - offset if ranged and offset else self._size) + SLACK
        resp = self._reg.request("GET", self._repo, f"/v2/{self._repo}/blobs/{self._digest}", headers=headers,
                                 kind="blob", stream=True, limit=limit)
        if resp.status_code >= 400:
            try:
                self._reg.check(resp, f"{self._reg.domain}/{self._repo}@{self._digest}", self._repo)
            finally:
                resp.close()
        skip = 0
        if resp.status_code == 206 and (offset or ranged):
            start, _, rest = resp.headers.get("content-range", "").removeprefix("bytes ").partition("-")
            if start != str(offset):
                resp.close()
                raise NetworkError(f"{self._what}: the registry resumed at the wrong offset "
                                   f"({start}, wanted {offset})")
            self._ends_here = not ranged or rest.split("/", 1)[0] == str(self._end - 1)
        elif ranged and offset == 0:  # the registry ignores Range: this is the whole blob
            self.whole, self._end, self._what = True, self._size, f"blob {self._digest}"
            self._start = 0
        elif ranged:
            resp.close()
            raise NetworkError(f"{self._what}: the registry answered with the whole blob (HTTP "
                               f"{resp.status_code}) after it had served ranges of it")
        elif offset:
            skip = offset  # no Range support: read again from the start and drop what we have
        self._resp = resp
        self._it = resp.iter_bytes()
        self._skip(skip)

    def _skip(self, skip: int) -> None:
        """Drop the first `skip` bytes of a restarted download (a cut here is one more resume)."""
        assert self._it is not None
        while skip:
            try:
                chunk = next(self._it, b"")
            except NetworkError as e:  # the connection broke (the transport says so in the project's terms)
                self._reconnect(e)
                return
            if not chunk:
                return  # shorter than before: the reader will see the short count
            if len(chunk) > skip:
                self._buf += chunk[skip:]  # after what was gathered before the cut
                return
            skip -= len(chunk)

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (as much as has arrived, gathered up to CHUNK when `n` is larger): fewer,
        larger steps for hashing, caching and decompressing; a cut loses nothing gathered. A chunk
        that arrived whole is handed on as it is (no copy); one that would overrun the read
        starts the next one. A span's stream stops at the span's end."""
        want = CHUNK if n < 0 else min(n, CHUNK)
        if self._span:
            want = min(want, self._end - self._offset)
            if want <= 0:
                self._finish()
                return b""
        if len(self._buf) > want:
            out, self._buf = self._buf[:want], self._buf[want:]
            self._offset += len(out)
            return out
        parts = [self._buf] if self._buf else []
        have, self._buf = len(self._buf), b""
        while have < want:
            assert self._it is not None
            self._reg.cancel.check()
            try:
                chunk = next(self._it, None)
                if chunk is None and self._span:  # a span's body ended early: resumed like a cut
                    raise NetworkError(f"{self._what}: the body ended at byte {self._offset + have}")
            except NetworkError as e:
                self._buf = b"".join(parts)  # kept: the resume starts after it
                self._reconnect(e)
                parts = [self._buf] if self._buf else []
                have, self._buf = len(self._buf), b""
                continue
            if chunk is None:
                break
            if have and have + len(chunk) > want:
                self._buf = chunk  # the next read starts with it
                break
            parts.append(chunk)
            have += len(chunk)
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        if len(out) > want:  # one chunk larger than the read
            out, self._buf = out[:want], out[want:]
        self._offset += len(out)
        return out

    def stop_at(self, end: int) -> int:
        """End a span's stream early: at `end`, or past what it has gathered already; the rest of
        the body is never read. Returns where it now ends."""
        end = max(end, self._offset + len(self._buf))
        if self._span and end < self._end:
            self._end, self._ends_here = end, False
        return self._end

    def _finish(self) -> None:
        """At a span's end: where the body should end here, nothing may follow (a body that goes
        on past what the registry announced is refused, as the verifying reader refuses an
        overrun); else the rest is simply never read."""
        if self._ends_here and self._it is not None:
            try:
                extra = len(self._buf) + len(next(self._it, b""))
            except NetworkError:  # cut after the last byte: nothing is missing
                extra = 0
            if extra:
                raise SizeMismatch(self._what, self._end - self._start, self._end - self._start + extra)
        self._buf, self._it = b"", None
        self.close()

    def _reconnect(self, err: Exception) -> None:
        self.close()
        if self._resumes >= self._reg.retry.attempts:
            raise NetworkError(f"{self._what}: download kept failing after {self._resumes} resumes: {_why(err)}")
        self._resumes += 1
        log.info("%s: connection broke at byte %d (%s); resuming", self._what, self._offset, _why(err))
        self._reg.cancel.sleep(self._reg.retry.delay(self._resumes - 1))
        self._open(self._offset + len(self._buf))  # from the first byte not yet received

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def __enter__(self) -> "BlobStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _why(err: Exception) -> str:
    """The reason a NetworkError gives, without the request it names."""
    return str(err).split(" failed: ", 1)[-1]
