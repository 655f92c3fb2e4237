"""Verified access to the cache's blobs, compressed or as the layer's tar.

Every read goes through the cache's VerifyingReader: a compressed blob against its
digest, a layer's tar against its diff_id (and its measured size). Whatever fails here
is the cache's fault (the content was checked on the way in) and raises CacheDamaged,
except a blob whose compressed digest is right but whose bytes are no gzip, zstd or
tar we can read: that is the image's fault, a LayerFormatError.
"""
from __future__ import annotations

import os
import threading
from typing import Callable

import zstandard

from registry_tools.cancel import Cancel
from registry_tools.errors import CacheDamaged, LayerFormatError, VerificationError
from registry_tools.model.compression import READ_SIZE, decompressed, sniff
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Readable, ReadableFile, VerifyingReader
from registry_tools.model.image import Layer
from registry_tools.store.cache import BlobCache

Write = Callable[[bytes], object]
# What reading a layer's tar raises when the blob (or the cache file) is not what it should be:
# damaged compressed data (the decompressing reader's LayerFormatError), a file that cannot be read.
DECOMPRESS_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, LayerFormatError)
READ_ERRORS: tuple[type[Exception], ...] = (VerificationError, *DECOMPRESS_ERRORS)


BACKGROUND_HASH_FROM = 16 << 20  # a thread of its own pays for itself past this many bytes


class SizeRecordWrong(Exception):
    """A layer's recorded uncompressed size (gzip trailer, zstd header) was not its real size.

    Raised only where the record was used as a plan; the docker-archive writer catches it
    and measures the layers exactly.
    """


class BlobStore:
    """The verified blobs of one operation, with the facts measured about its layers."""

    def __init__(self, cache: BlobCache):
        self.cache = cache

    def _bad_layer(self, desc: mf.Descriptor, what: str, e: BaseException) -> Exception:
        """A decompression failure: the cache's damage, or (if the blob is intact) the image's."""
        try:
            with self.cache.open(desc, what) as reader:
                reader.drain()
        except CacheDamaged as damage:
            return damage
        except OSError:
            return CacheDamaged(desc.digest, "it cannot be read")
        if isinstance(e, VerificationError):
            return e  # the blob is intact: the image itself is wrong (a diff_id the config misstates)
        return LayerFormatError(f"{what}: its bytes match the digest but are not a layer we can read "
                                f"(gzip, zstd or tar): {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}")

    def copy_verified(self, desc: mf.Descriptor, write: Write, what: str) -> None:
        with self.cache.open(desc, what) as reader:
            while chunk := reader.read(READ_SIZE):
                write(chunk)

    def link_verified(self, desc: mf.Descriptor, dest: "os.PathLike[str]") -> bool:
        """Hard-link a cached blob to `dest` after checking it; False where links cannot be made.

        Cached blobs are read-only and re-checked whenever they are read, so sharing the
        inode costs no safety and saves copying every byte.
        """
        with self.cache.open(desc) as reader:
            reader.drain()
        try:
            os.link(self.cache.path(desc.digest), dest)
        except OSError:
            return False
        return True

    def copy_uncompressed(self, layer: Layer, write: Write, what: str, planned: int | None = None,
                          opener: Callable[[], ReadableFile] | None = None, dominant: bool = False) -> None:
        """Stream a layer's tar, verified: against the measured size and the compressed digest
        when an earlier run checked its diff_id, else against the diff_id itself. `planned`
        is the size a plan assumed from the size record (SizeRecordWrong if it was wrong). `opener`
    reads the compressed bytes of a layer still downloading (the download checks their digest;
    the tar is checked against the diff_id here; `copy_checked_later` leaves that check to a
    caller that reads the tar back)."""
        measured = layer.size is not None
        expected = layer.size if measured else planned
        big = dominant and (expected or 0) >= BACKGROUND_HASH_FROM
        # The thread that calls this decompresses; hashing (the compressed bytes for a measured
        # layer, the tar for a new one) runs beside it, on a helper thread.
        if measured:  # the tar was checked against its diff_id before: check the compressed digest
            compressed: ReadableFile = self.cache.open(layer.descriptor, what, background=big)
        else:  # the tar is checked against the diff_id here: that verifies every byte read
            compressed = opener() if opener is not None else self.cache.open_unhashed(layer.descriptor)
        streamed = opener is not None and not measured
        n = 0
        tar: VerifyingReader | None = None
        try:
            stream, kind = decompressed(compressed)
            if not measured:
                tar = VerifyingReader(stream, layer.diff_id, None, f"{what} uncompressed content (diff_id)",
                                      background=big)
            n = _copy_at_most(tar or stream, write, expected)
            if measured:
                assert isinstance(compressed, VerifyingReader)
                compressed.drain()
        except CacheDamaged:
            raise
        except VerificationError as e:
            if streamed:
                raise  # the download's own check (or the diff_id): nothing in the cache to blame
            raise (self._bad_layer(layer.descriptor, what, e) if not measured
                   else CacheDamaged(layer.descriptor.digest, str(e))) from None
        except DECOMPRESS_ERRORS as e:
            if streamed:
                raise LayerFormatError(f"{what}: not a layer we can read (gzip, zstd or tar): {e}") from None
            raise self._bad_layer(layer.descriptor, what, e) from None
        finally:
            if tar is not None:
                tar.close()  # stops its hashing thread when the read was abandoned
            compressed.close()
        if expected is not None and n != expected:
            if not measured:
                raise SizeRecordWrong(what)
            raise CacheDamaged(layer.descriptor.digest, f"{what}: the layer's tar is not {expected} bytes")
        if not measured:
            self.remember(layer, n, kind)

    def copy_checked_later(self, layer: Layer, write: Write, what: str, planned: int | None,
                           checked_later: Callable[[str], None]) -> None:
        """A layer's tar (one `checks_later` allows) whose diff_id the caller checks on the tar as
        it was written, with a `LayerCheck` (an archive's ordered hash reads it back anyway);
        `checked_later` is told the compression found once the copy has ended well."""
        compressed = self.cache.open_unhashed(layer.descriptor)
        try:
            stream, kind = decompressed(compressed)
            n = _copy_at_most(stream, write, planned)
        except DECOMPRESS_ERRORS as e:
            raise self._bad_layer(layer.descriptor, what, e) from None
        finally:
            compressed.close()
        if planned is not None and n != planned:
            raise SizeRecordWrong(what)
        checked_later(kind)

    def remember(self, layer: Layer, size: int, kind: str) -> None:
        """The facts a later run trusts: the layer's diff_id checked, its tar measured."""
        self.cache.put_meta(layer.descriptor.digest, {"diff_id": str(layer.diff_id), "size": size,
                                                      "compression": kind})

    def measured(self, layer: Layer) -> Layer:
        """The layer with its exact size, if an earlier run verified it."""
        facts = self.cache.meta(layer.descriptor.digest)
        if facts and facts["diff_id"] == str(layer.diff_id):
            return Layer(layer.descriptor, layer.diff_id, facts["size"])
        return layer

    def size_record(self, layer: Layer) -> int | None:
        """The uncompressed size the blob's format records (a hint, checked when used)."""
        return size_record(str(self.cache.path(layer.descriptor.digest)))

    def measure(self, layer: Layer, what: str, cancel: Cancel | None = None) -> Layer:
        """diff_id checked and uncompressed size measured, once; remembered for later runs."""
        known = layer if layer.size is not None else self.measured(layer)
        if known.size is not None:
            return known
        desc = layer.descriptor
        n = 0
        compressed = self.cache.open(desc, what)
        try:
            stream, kind = decompressed(compressed)
            tar = VerifyingReader(stream, layer.diff_id, None, f"{what} uncompressed content (diff_id)")
            while chunk := tar.read(READ_SIZE):
                n += len(chunk)
                if cancel is not None:
                    cancel.check()
            compressed.drain()
        except CacheDamaged:
            raise
        except READ_ERRORS as e:
            raise self._bad_layer(desc, what, e) from None
        finally:
            compressed.close()
        self.remember(layer, n, kind)
        return Layer(desc, layer.diff_id, n)


def size_record(path: str) -> int | None:
    """The uncompressed size the format itself records, if any; a hint to be checked, never trusted.

    gzip keeps the size modulo 2**32 of its last member in the trailer (exact for the usual
    single-member layer under 4 GiB); zstd may record it in the frame header.
    """
    with open(path, "rb") as f:
        compression = sniff(f.read(4))
        if compression == "none":
            f.seek(0, 2)
            return f.tell()
        if compression == "gzip":
            f.seek(0, 2)
            if f.tell() < 18:
                return None
            f.seek(-4, 2)
            return int.from_bytes(f.read(4), "little")
        if compression == "zstd":
            f.seek(0)
            try:
                size = zstandard.frame_content_size(f.read(18))
            except zstandard.ZstdError:
                return None
            return size if size >= 0 else None
    return None


def _copy_at_most(source: Readable, write: Write, limit: int | None) -> int:
    """`source` to `write`, stopping once past `limit` bytes; how many were read (the caller
    tells a wrong size by it)."""
    n = 0
    while chunk := source.read(READ_SIZE):
        n += len(chunk)
        if limit is not None and n > limit:
            break
        write(chunk)
    return n


def checks_later(layer: Layer, opener: object) -> bool:
    """Whether a caller that reads the tar back can check this layer's diff_id: not yet checked
    by an earlier run (unmeasured), and read from the cache (not while it downloads)."""
    return layer.size is None and opener is None


class LayerCheck:
    """A layer's diff_id, checked on the tar as it was written (read back by the caller): every
    byte through the one verifying reader, the cache's facts recorded once it holds, and a
    mismatch the same error the copy itself would have raised."""

    def __init__(self, store: BlobStore, layer: Layer, what: str, size: int):
        self.store = store
        self.layer = layer
        self.what = what
        self.size = size
        self._lock = threading.Lock()
        self._kind = ""  # the compression found, once the tar has been written whole
        self._verified = False

    def written(self, kind: str) -> None:
        """The copy has ended well (every byte read, the size as planned)."""
        with self._lock:
            self._kind = kind
            both = self._verified
        if both:
            self._record()

    def verify(self, tar: "Readable") -> None:
        try:
            VerifyingReader(tar, self.layer.diff_id, self.size, f"{self.what} uncompressed content (diff_id)").drain()
        except VerificationError as e:
            raise self.store._bad_layer(self.layer.descriptor, self.what, e) from None
        with self._lock:
            self._verified = True
            both = bool(self._kind)
        if both:
            self._record()

    def _record(self) -> None:
        """Once both the copy and the check held."""
        self.store.remember(self.layer, self.size, self._kind)
