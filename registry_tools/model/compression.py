"""Layer compression: recognise gzip, zstd and plain tar by their bytes, and decompress.

The magic bytes decide, not the media type: registries hold layers whose media type
says gzip while the bytes are zstd, and the other way round. These are stream
wrappers only: they read what they are given and open nothing themselves.
"""
from __future__ import annotations

from typing import BinaryIO, cast

import hashlib
from typing import Any, Callable

import zstandard
from isal import igzip, isal_zlib

from registry_tools.errors import UsageError

from registry_tools.model.digest import Readable, ReaderBase

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
READ_SIZE = 1 << 20
GZIP_LEVEL = 2  # isal; fixed, so compressed digests are stable
ZSTD_LEVEL = 3


def sniff(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


class _Prefixed(ReaderBase):
    """A reader that first returns `head`, then the rest of `raw`."""

    def __init__(self, head: bytes, raw: Readable):
        self._head = head
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0 or n >= len(self._head):
                out, self._head = self._head, b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._raw.read(n)


def _read_head(raw: Readable, n: int = 4) -> bytes:
    head = b""
    while len(head) < n:
        b = raw.read(n - len(head))
        if not b:
            break
        head += b
    return head


def decompressed(raw: Readable) -> tuple[Readable, str]:
    """A reader of the uncompressed tar stream, and the compression that was found."""
    head = _read_head(raw)
    kind = sniff(head)
    stream = _Prefixed(head, raw)
    if kind == "gzip":
        return igzip.GzipFile(fileobj=stream, mode="rb"), kind  # type: ignore[arg-type]
    if kind == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, stream), read_size=READ_SIZE, read_across_frames=True)
        return reader, kind
    return stream, kind


class Compressor:
    """Streams a layer tar into its compressed blob, hashing both sides on the way."""

    def __init__(self, kind: str, out: Callable[[bytes], object]):
        self.kind = kind
        self._out = out
        self.diff = hashlib.sha256()
        self.blob = hashlib.sha256()
        self.size = 0
        self.blob_size = 0
        self._c: Any
        if kind == "gz":
            self._c = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)
        elif kind == "zstd":
            self._c = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        elif kind == "none":
            self._c = None
        else:
            raise UsageError(f"unknown compressor {kind!r}")

    def _emit(self, data: bytes) -> None:
        if data:
            self.blob.update(data)
            self.blob_size += len(data)
            self._out(data)

    def write(self, data: bytes) -> None:
        self.diff.update(data)
        self.size += len(data)
        self._emit(self._c.compress(data) if self._c is not None else data)

    def finish(self) -> None:
        if self._c is not None:
            self._emit(self._c.flush())
