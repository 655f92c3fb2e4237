"""Tar-based outputs: docker-archive (what `docker load` and `podman load` read) and oci-archive.

Entries are written in a fixed order with fixed owners, modes and times, so the archive's
bytes depend on the image alone. Changing anything here changes every pinned hash: the
golden hashes in the tests exist to catch that.
"""
from __future__ import annotations

import json
import tarfile
from typing import Callable

from .copy import BlobStore, ResolvedImage
from .layout import layout_documents

BLOCK = 512
_ZEROS = b"\0" * (2 * BLOCK)

Write = Callable[[bytes], object]


def _header(name: str, size: int, kind: bytes, mode: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


class TarWriter:
    """Writes tar entries to a write callable; the data of a file entry may be streamed."""

    def __init__(self, write: Write):
        self._write = write

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._write(_header(name.rstrip("/") + "/", 0, tarfile.DIRTYPE, mode))

    def add_bytes(self, name: str, data: bytes, mode: int = 0o444) -> None:
        self._write(_header(name, len(data), tarfile.REGTYPE, mode))
        self._write(data)
        self._pad(len(data))

    def add_stream(self, name: str, size: int, produce: Callable[[Write], None], mode: int = 0o444) -> None:
        """`produce` must write exactly `size` bytes (the caller's copy functions check that)."""
        self._write(_header(name, size, tarfile.REGTYPE, mode))
        produce(self._write)
        self._pad(size)

    def _pad(self, size: int) -> None:
        pad = (-size) % BLOCK
        if pad:
            self._write(b"\0" * pad)

    def close(self) -> None:
        self._write(_ZEROS)


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def write_docker_archive(write: Write, image: ResolvedImage, store: BlobStore, repo_tag: str) -> None:
    """The layout `skopeo copy … docker-archive:` writes: <diff_id>.tar layers, <config>.json,
    manifest.json and repositories; layers uncompressed, each stored once."""
    tar = TarWriter(write)
    written: set[str] = set()
    layer_names = []
    for i, layer in enumerate(image.layers):
        name = f"{layer.diff_id.hex}.tar"
        layer_names.append(name)
        if name in written:
            continue
        written.add(name)
        what = f"layer {i + 1}/{len(image.layers)} {layer.descriptor.digest}"
        tar.add_stream(name, layer.size, lambda w, layer=layer, what=what: store.copy_uncompressed(layer, w, what))
    config_name = f"{image.config_digest.hex}.json"
    tar.add_bytes(config_name, image.config_raw)
    manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names}]
    tar.add_bytes("manifest.json", canonical_json(manifest))
    name, _, tag = repo_tag.rpartition(":")
    if image.layers:
        tar.add_bytes("repositories", canonical_json({name: {tag: image.layers[-1].diff_id.hex}}))
    tar.close()


def write_oci_archive(write: Write, image: ResolvedImage, store: BlobStore, image_name: str, tag: str) -> None:
    """An OCI image layout in a tar: directories first, then every path in sorted order."""
    docs, blobs = layout_documents(image, image_name, tag)
    tar = TarWriter(write)
    tar.add_dir("blobs")
    tar.add_dir("blobs/sha256")
    for digest_hex, source in sorted(blobs.items()):
        name = f"blobs/sha256/{digest_hex}"
        if isinstance(source, bytes):
            tar.add_bytes(name, source)
        else:
            tar.add_stream(name, source.size,
                           lambda w, d=source: store.copy_verified(d, w, f"blob {d.digest}"))
    for name in sorted(docs):
        tar.add_bytes(name, docs[name])
    tar.close()
