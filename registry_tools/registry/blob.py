"""Reading a blob from a registry: a file-like stream that resumes with Range after a cut.

It only moves bytes; what they must be is checked by the caller's VerifyingReader, and
the transport bounds the body near the blob's announced size.
"""
from __future__ import annotations

import logging
from typing import Iterator

import httpx

from registry_tools.errors import NetworkError
from registry_tools.model.digest import Digest
from registry_tools.registry.client import Registry

log = logging.getLogger("registry_tools.blob")

CHUNK = 1 << 20  # handed on a megabyte at a time: fewer, larger steps for hashing, caching and decompressing
# Bytes past the announced size the transport lets through, so the reader names the overrun: a read
# gathers up to CHUNK (and holds one network chunk more) before the reader sees any of it.
SLACK = 2 * CHUNK


class BlobStream:
    """GET /v2/<repo>/blobs/<digest>, resuming from where a broken connection left off."""

    def __init__(self, registry: Registry, repo: str, digest: Digest, size: int):
        self._reg = registry
        self._repo = repo
        self._digest = digest
        self._size = size
        self._offset = 0
        self._buf = b""
        self._resumes = 0
        self._resp: httpx.Response | None = None
        self._it: Iterator[bytes] | None = None
        self._what = f"blob {digest}"
        self._open(0)

    def _open(self, offset: int) -> None:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._reg.request("GET", self._repo, f"/v2/{self._repo}/blobs/{self._digest}", headers=headers,
                                 kind="blob", stream=True, limit=self._size + SLACK)
        if resp.status_code >= 400:
            try:
                self._reg.check(resp, f"{self._reg.domain}/{self._repo}@{self._digest}", self._repo)
            finally:
                resp.close()
        skip = 0
        if offset:
            if resp.status_code == 206:
                start = resp.headers.get("content-range", "").removeprefix("bytes ").split("-", 1)[0]
                if start != str(offset):
                    resp.close()
                    raise NetworkError(f"{self._what}: the registry resumed at the wrong offset "
                                       f"({start}, wanted {offset})")
            else:
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
        starts the next one."""
        want = CHUNK if n < 0 else min(n, CHUNK)
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
