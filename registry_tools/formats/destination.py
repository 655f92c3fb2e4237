"""Archive and layout destinations: a docker-archive, an oci-archive or an OCI layout
directory, written to a path, or only hashed (what prefetch pins).

Whatever the source, the output's bytes depend on the image and the names given alone,
and nothing reaches the destination before every check (and the pinned hash, if any)
passed: files and directories are written beside it and renamed into place.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from registry_tools.errors import HashMismatch, UsageError
from registry_tools.fileio import AtomicDir, AtomicFile, PipelinedHashWriter
from registry_tools.formats import FORMATS
from registry_tools.formats.docker_archive import image_entries
from registry_tools.formats.nar import nar_sha256
from registry_tools.engine import Need
from registry_tools.formats.oci_layout import oci_archive_entries, tag_in_layout, write_layout
from registry_tools.formats.tar import Entry, write_positional, write_stream
from registry_tools.model.digest import Digest, sri
from registry_tools.model.image import BlobOrigin, Image, LayerSupply
from registry_tools.model.tree import ManifestNode
from registry_tools.store.blobs import BlobStore, SizeRecordWrong
from registry_tools.workers import Workers


@dataclass(frozen=True)
class ArchiveOptions:
    """What an archive or layout records and checks, besides the image itself."""

    format: str
    final_name: str
    final_tag: str
    expected: bytes | None = None  # the sha256 the user pinned (checked before anything is written)
    expected_text: str = ""  # that hash as the user wrote it, for the message
    keep_others: bool = False  # an OCI layout: add to what is there (other tags kept) instead of replacing it

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")


class ArchiveDestination:
    """An image as an archive or layout at `output`: a path, a binary stream (archives only), or
    None for its hash only. `write` returns the sha256 of what was (or would be) written."""

    def __init__(self, store: BlobStore, options: ArchiveOptions, output: str | os.PathLike[str] | BinaryIO | None,
                 tag_of: Callable[[Image], str] | None = None, workers: Workers | None = None):
        """`tag_of` names the tag from the image itself when options.final_tag is empty (a build's
        default tag is a hash of its config); `workers`: the operation's pool."""
        self.store = store
        self.workers = workers
        self.options = options
        self.stream: BinaryIO | None = output if isinstance(output, io.IOBase) else None  # type: ignore[assignment]
        self.path: str | os.PathLike[str] | None = None if self.stream is not None else output  # type: ignore
        self.tag_of = tag_of

    @property
    def need(self) -> Need:
        """A docker-archive file (or its hash) takes each layer as its download lands; the others,
        and any archive sent to a stream (whose bytes cannot be taken back should a layer's size
        record be wrong), need every layer measured first."""
        if self.options.format == "docker-archive" and self.stream is None:
            return Need.STREAM
        return Need.MEASURED

    def holds(self, digest: Digest) -> None:
        return None  # a file is written whole, every time

    def write(self, supply: LayerSupply) -> bytes:
        """Fetch (through `supply`) and write, overlapping the two where the format allows.

        A docker-archive stores layers uncompressed: each is decompressed once, straight into
        the output, as soon as its download lands, with the size its compressed form records.
        Should that record be wrong (a multi-member gzip, a layer over 4 GiB), the layers'
        exact sizes are measured and the output is written again.
        """
        image = supply.image()
        if self.need is Need.STREAM:
            try:
                return self._write(image, supply)
            except SizeRecordWrong:
                pass
        measured = Image(image.manifest, image.manifest_descriptor, image.config_raw, image.config,
                         supply.measured(), image.index_digest)
        return self._write(measured, None)

    def write_tree(self, node: ManifestNode, blobs: BlobOrigin | None = None) -> bytes | None:
        """A whole tree (an index and every image under it, its blobs in the cache: `blobs` is the
        cache) as an OCI layout or oci-archive; a docker-archive holds one image, so it refuses.
        Added to an existing layout (`keep_others`), it returns None: there is no hash to pin."""
        o = self.options
        if o.format == "docker-archive":
            raise UsageError("a docker-archive holds one platform: write the whole index with --format oci or "
                             "oci-archive, or choose one platform")
        if not o.final_tag:
            raise UsageError("name the tag to record in the layout")
        if o.format == "oci" and o.keep_others:
            if self.path is None:
                raise UsageError("an OCI layout to add to is a directory")
            tag_in_layout(Path(self.path), node, self.store, o.final_tag, o.final_name)
            return None
        if o.format == "oci":
            return self._layout(node, o)
        return self._emit(oci_archive_entries(node, o.final_name, o.final_tag))

    def _write(self, image: Image, supply: LayerSupply | None) -> bytes:
        o = self.options
        if not o.final_tag and self.tag_of is not None:
            o = replace(o, final_tag=self.tag_of(image))
        if o.format == "oci":
            return self._layout(image, o)
        if o.format == "docker-archive":
            entries: Iterator[Entry] = image_entries(image, self.store, f"{o.final_name}:{o.final_tag}", supply)
        else:
            entries = oci_archive_entries(image, o.final_name, o.final_tag)
        return self._emit(entries)

    def _emit(self, entries: Iterator[Entry]) -> bytes:
        """An archive's entries to the stream, the hash, or the file (renamed into place once checked)."""
        if self.path is None:  # a stream, or only the hash
            pipe = PipelinedHashWriter(self.stream.write if self.stream is not None else None)
            try:
                write_stream(entries, self.store, pipe.write)
                pipe.close()
            except BaseException:
                pipe.abort()
                raise
            return self._checked(pipe.hash.digest())
        out = AtomicFile(self.path)
        try:
            actual = self._checked(write_positional(entries, self.store, out.file.fileno(), self.workers))
            out.commit()
            return actual
        except OSError as e:
            out.abort()
            raise self._named(e) from None
        except BaseException:
            out.abort()
            raise

    def _layout(self, image: Image | ManifestNode, o: ArchiveOptions) -> bytes:
        if self.stream is not None:
            raise UsageError("an OCI layout is a directory: it cannot be written to a stream")
        if self.path is None:
            tmpdir = Path(tempfile.mkdtemp(prefix="registry-tools-"))
            try:
                write_layout(tmpdir / "layout", image, self.store, o.final_name, o.final_tag)
                return self._checked(nar_sha256(str(tmpdir / "layout")))
            finally:
                shutil.rmtree(tmpdir, ignore_errors=True)
        target = AtomicDir(self.path)
        try:
            write_layout(target.tmp, image, self.store, o.final_name, o.final_tag)
            actual = self._checked(nar_sha256(str(target.tmp)))
            target.commit()
            return actual
        except OSError as e:
            target.abort()
            raise self._named(e) from None
        except BaseException:
            target.abort()
            raise

    def _named(self, e: OSError) -> OSError:
        """A failed write to the output (a full disk) says which output it was."""
        assert self.path is not None
        return e if e.filename is not None else OSError(e.errno, e.strerror, os.fspath(self.path))

    def _checked(self, actual: bytes) -> bytes:
        o = self.options
        if o.expected is not None and o.expected != actual:
            raise HashMismatch(o.expected_text, actual.hex(), sri(actual))
        return actual
