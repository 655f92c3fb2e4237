"""An image's root filesystem as one tar (dockerTools.exportImage, `podman export`): its layers
applied in order, whiteouts (`.wh.NAME`) deleting what lower layers had and opaque markers
(`.wh..wh..opq`) hiding a directory's lower contents.

Two passes over the verified layers: the first reads only headers and decides, for every
path, which layer's entry survives; the second copies those entries bottom layer first, so
a directory comes before what is in it and a hard link after its target. Every entry keeps
its mode, owners, time and link as the layer had it; the output depends on the image alone.
A name that would leave the root (`..`, or absolute once cleaned), a hard link to such a
name, or a symbolic link that climbs out of the root is refused, naming the layer.
"""
from __future__ import annotations

import os
import posixpath
import tarfile
from contextlib import contextmanager
from typing import IO, Iterator

from registry_tools.errors import LayerFormatError
from registry_tools.model.compression import decompressed
from registry_tools.model.digest import VerifyingReader
from registry_tools.fileio import AtomicFile
from registry_tools.model.image import Image, Layer, LayerSupply
from registry_tools.store.cache import BlobCache

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def clean(name: str, where: str) -> str:
    """A member name as a path under the root ("" for the root itself); leaving the root is refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerFormatError(f"{where}: refuses {name!r}: it would leave the root")
    return "/".join(parts)


def _escapes(link_dir: str, target: str) -> bool:
    """A relative symbolic link target that climbs above the root from where the link is."""
    if target.startswith("/"):
        return False  # absolute targets are read inside the container's root
    depth = len([p for p in link_dir.split("/") if p])
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


@contextmanager
def _members(layer: Layer, cache: BlobCache, where: str) -> Iterator[tarfile.TarFile]:
    """The layer's tar, its compressed bytes verified against the digest and its tar against the diff_id."""
    with cache.open(layer.descriptor, where) as raw:
        stream, _ = decompressed(raw)
        tar_reader = VerifyingReader(stream, layer.diff_id, layer.size, f"{where} (uncompressed)")
        with tarfile.open(fileobj=tar_reader, mode="r|") as tf:  # type: ignore[call-overload]
            yield tf
        tar_reader.drain()
        raw.drain()


def _winners(layers: list[Layer], cache: BlobCache) -> dict[str, tuple[int, int]]:
    """path -> (layer index, position in that layer) of the entry that survives."""
    per_layer: list[list[tuple[str, bool, int]]] = []  # (path, is_dir, position) without markers
    marks: list[tuple[set[str], set[str]]] = []  # (whiteouts, opaque dirs) of each layer
    for i, layer in enumerate(layers):
        where = f"layer {i + 1} ({layer.descriptor.digest})"
        entries: list[tuple[str, bool, int]] = []
        whiteouts: set[str] = set()
        opaques: set[str] = set()
        with _members(layer, cache, where) as tf:
            for pos, m in enumerate(tf):
                path = clean(m.name, where)
                base = posixpath.basename(path)
                parent = posixpath.dirname(path)
                if base == OPAQUE:
                    opaques.add(parent)
                elif base.startswith(WHITEOUT):
                    whiteouts.add(posixpath.join(parent, base[len(WHITEOUT):]))
                elif path:
                    _check_links(m, path, where)
                    entries.append((path, m.isdir(), pos))
        per_layer.append(entries)
        marks.append((whiteouts, opaques))
    winners: dict[str, tuple[int, int]] = {}
    kinds: dict[str, bool] = {}  # a surviving path: is it a directory
    gone: set[str] = set()
    hidden_under: set[str] = set()  # directories whose lower contents are hidden
    for i in range(len(per_layer) - 1, -1, -1):
        for path, is_dir, pos in reversed(per_layer[i]):  # a path twice in one layer: the last one counts
            if path in winners or path in gone or _under(path, gone | hidden_under):
                continue
            if any(not kinds.get(a, True) for a in _ancestors(path)):
                continue  # an upper layer put a file where this path's directory was
            winners[path] = (i, pos)
            kinds[path] = is_dir
        whiteouts, opaques = marks[i]
        gone |= whiteouts
        hidden_under |= opaques
    return winners


def _ancestors(path: str) -> Iterator[str]:
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        yield path


def _under(path: str, dirs: set[str]) -> bool:
    return any(a in dirs for a in _ancestors(path)) or ("" in dirs)


def _check_links(m: tarfile.TarInfo, path: str, where: str) -> None:
    if m.islnk():
        clean(m.linkname, where)  # a hard link must name a path in the root
    elif m.issym() and _escapes(posixpath.dirname(path), m.linkname):
        raise LayerFormatError(f"{where}: refuses the link {path!r} -> {m.linkname!r}: it climbs out of the root")


def write_rootfs(layers: list[Layer], cache: BlobCache, out: IO[bytes]) -> int:
    """The flattened root filesystem of `layers` as a tar on `out`; returns the number of entries."""
    winners = _winners(layers, cache)
    count = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dest:  # type: ignore[call-overload]
        for i, layer in enumerate(layers):
            where = f"layer {i + 1} ({layer.descriptor.digest})"
            with _members(layer, cache, where) as tf:
                for pos, m in enumerate(tf):
                    path = clean(m.name, where)
                    if not path or winners.get(path) != (i, pos):
                        continue
                    info = _copy_info(m, path, where)
                    dest.addfile(info, tf.extractfile(m) if m.isreg() else None)
                    count += 1
    return count


def _copy_info(m: tarfile.TarInfo, path: str, where: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.uid, info.gid = m.type, m.mode, m.uid, m.gid
    info.uname, info.gname, info.mtime, info.size = m.uname, m.gname, int(m.mtime), m.size if m.isreg() else 0
    info.devmajor, info.devminor = m.devmajor, m.devminor
    if m.islnk():
        info.linkname = clean(m.linkname, where)
    elif m.issym():
        info.linkname = m.linkname
    info.pax_headers = {k: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    return info


class _Hashing:
    """A file object that hashes what is written to it."""

    def __init__(self, out: IO[bytes]):
        import hashlib

        self.out = out
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self.out.write(data) or len(data)

    def flush(self) -> None:
        self.out.flush()


class RootfsDestination:
    """The flattened root filesystem of an image as a tar file, written beside `path` and renamed;
    `write` returns (sha256 of the tar, entries)."""

    streams_layers = False  # every layer must be in the cache, verified, before the first pass

    def __init__(self, cache: BlobCache, path: str | os.PathLike[str]):
        self.cache = cache
        self.path = path

    def write(self, supply: LayerSupply) -> tuple[bytes, int]:
        image = supply.image()
        measured = Image(image.manifest, image.manifest_descriptor, image.config_raw, image.config,
                         supply.measured(), image.index_digest)
        out = AtomicFile(self.path)
        try:
            sink = _Hashing(out.file)
            entries = write_rootfs(measured.layers, self.cache, sink)  # type: ignore[arg-type]
            out.commit()
            return sink.hash.digest(), entries
        except BaseException:
            out.abort()
            raise
