"""Layer compression: recognise gzip, zstd and plain tar by their bytes, and decompress.

The magic bytes decide, not the media type: registries hold layers whose media type
says gzip while the bytes are zstd, and the other way round. These are stream
wrappers only: they read what they are given and open nothing themselves.
"""
from __future__ import annotations

from typing import BinaryIO, cast

import gzip
import hashlib
from typing import Any, Callable

import zstandard
from isal import igzip, isal_zlib
from isal.igzip_lib import IsalError

from registry_tools.errors import LayerFormatError, UsageError

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


# What the decompressors raise on bytes that are not their format: a damaged deflate stream
# (isal's error is no OSError), a bad header or CRC, a stream cut short, a damaged zstd frame.
# Whatever the reader beneath raises (a VerificationError, an OSError of the file) is not among them.
_DAMAGED: tuple[type[Exception], ...] = (cast("type[Exception]", IsalError), gzip.BadGzipFile, EOFError,
                                         zstandard.ZstdError)


class _Decompressing(ReaderBase):
    """A decompressor's output; compressed bytes it cannot read are a LayerFormatError, so every
    reader of a layer (pull, a build's fromImage, a push of an archive, export) ends in one line."""

    def __init__(self, inner: Any, kind: str, what: str):
        self._inner = inner
        self._kind = kind
        self._what = what

    def read(self, n: int = -1) -> bytes:
        try:
            return cast(bytes, self._inner.read(n))
        except _DAMAGED as e:
            detail = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            where = f"{self._what}: " if self._what else ""
            raise LayerFormatError(f"{where}damaged {self._kind} data ({detail})") from None

    def close(self) -> None:
        self._inner.close()


def decompressed(raw: Readable, what: str = "") -> tuple[Readable, str]:
    """A reader of the uncompressed tar stream, and the compression that was found.

    Damaged compressed data raises LayerFormatError, its message led by `what` (the layer)."""
    head = _read_head(raw)
    kind = sniff(head)
    stream = _Prefixed(head, raw)
    if kind == "gzip":
        return _Decompressing(igzip.GzipFile(fileobj=stream, mode="rb"), kind, what), kind  # type: ignore[arg-type]
    if kind == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, stream), read_size=READ_SIZE, read_across_frames=True)
        return _Decompressing(reader, kind, what), kind
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
