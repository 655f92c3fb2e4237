"""An image's root filesystem: its layers applied in order to a model of the tree, the result
written as one tar (`export`: dockerTools.exportImage, `podman export`; the same tar is the one
layer a flattened image holds) or into a directory (the tree runAsRoot runs in).

The model (`Tree`) holds names, kinds and links, never contents. Layers apply bottom first:
- its whiteouts (`.wh.NAME`) delete what lower layers had at NAME and its opaque markers
  (`.wh..wh..opq`) hide a directory's lower contents; then its entries, in order (a name twice:
  the last one counts; a directory over a directory: their contents merge).
- an entry whose parent path passes through a symbolic link (or a file) of a lower layer
  replaces that link by a directory, as overlay storage does; under a link its own layer made
  (which podman's extraction would follow) it is refused. Nothing is ever placed under a link.
- a hard link names a file the tree holds when the link is read; a link to a name that is
  absent, whited out, reached through a symbolic link, or a directory is refused. If the name
  it was made to is later removed or given new content, the file stays under its other names:
  its content is written under the first of them and the rest link to that one. So the output
  never holds a hard link to a name it does not hold, or holds with other content.
- a name that would leave the root (`..`, or absolute once cleaned), a hard link to such a
  name, or a symbolic link that climbs out of the root is refused, naming the layer.

Two passes over the layers, contents streamed and never held: the first reads headers only, a
layer at a time; the second copies what survives bottom layer first (a hard link after the file
it names). Every entry keeps its mode, owners, time and link; the output depends on the image
alone.
"""
from __future__ import annotations

import os
import posixpath
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import IO, Callable, ContextManager, Iterable, Iterator, Sequence

from registry_tools.engine import Need
from registry_tools.errors import LayerFormatError, UsageError
from registry_tools.model.compression import decompressed
from registry_tools.model.digest import Digest, VerifyingReader
from registry_tools.fileio import AtomicFile
from registry_tools.model.image import BlobOrigin, Image, Layer, LayerSupply
from registry_tools.model.tree import ManifestNode
from registry_tools.store.cache import BlobCache

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

At = tuple[int, int]  # an entry: (its layer, its position in that layer)
Members = Iterator[tuple[tarfile.TarInfo, Callable[[], IO[bytes]]]]  # a header, and how to read its content
Add = Callable[[tarfile.TarInfo, IO[bytes] | None], object]


@dataclass(frozen=True)
class LayerSource:
    """A layer as tar members, read as often as asked; `where` names it in errors."""

    where: str
    members: Callable[[], ContextManager[Members]]


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


class _Node:
    __slots__ = ("at", "inode", "children")

    def __init__(self, at: At | None, inode: At | None = None, children: dict[str, _Node] | None = None):
        self.at = at  # the entry that made this name; None: a directory no entry declared
        self.inode = inode  # not a directory: the entry whose content (or link target) it holds
        self.children = children  # a directory: what is in it, by name


class Tree:
    """The filesystem a stack of layers makes, as names only: `apply` each layer, then `plan`."""

    def __init__(self) -> None:
        self.root = _Node(None, children={})

    def apply(self, i: int, where: str, members: Iterable[tarfile.TarInfo]) -> None:
        """Layer i: its whiteouts and opaque markers (over the layers below), then its entries."""
        entries: list[tuple[int, str, bool, str | None]] = []  # position, path, is a directory, links to
        for pos, m in enumerate(members):
            path = clean(m.name, where)
            parent, base = posixpath.split(path)
            if base == OPAQUE:
                node = self._find(parent)
                if node is not None and node.children is not None:
                    node.children.clear()
            elif base.startswith(WHITEOUT):
                node = self._find(parent)
                if node is not None and node.children is not None:
                    node.children.pop(base[len(WHITEOUT):], None)
            elif path:
                if m.issym() and _escapes(parent, m.linkname):
                    raise LayerFormatError(f"{where}: refuses the link {path!r} -> {m.linkname!r}: it climbs out "
                                           "of the root")
                entries.append((pos, path, m.isdir(), clean(m.linkname, where) if m.islnk() else None))
        for pos, path, is_dir, link in entries:
            self._put((i, pos), path, is_dir, link, where)

    def _find(self, path: str) -> _Node | None:
        """The node at `path`, reached through directories only."""
        node: _Node | None = self.root
        for part in path.split("/") if path else []:
            node = node.children.get(part) if node is not None and node.children is not None else None
        return node

    def _put(self, at: At, path: str, is_dir: bool, link: str | None, where: str) -> None:
        inode = at
        if link is not None:
            target = self._find(link)
            if target is None or target.inode is None:
                raise LayerFormatError(f"{where}: refuses the hard link {path!r} -> {link!r}: the image holds no "
                                       "file by that name there")
            inode = target.inode
        *parents, name = path.split("/")
        node = self.root
        for n, part in enumerate(parents):
            assert node.children is not None
            child = node.children.get(part)
            if child is not None and child.at is not None and child.children is None and child.at[0] == at[0]:
                raise LayerFormatError(f"{where}: refuses {path!r}: it is under {'/'.join(parents[:n + 1])!r}, "
                                       "which the same layer makes a symbolic link or a file")
            if child is None or child.children is None:  # absent, or a lower layer's link or file
                child = node.children[part] = _Node(None, children={})
            node = child
        assert node.children is not None
        old = node.children.get(name)
        if is_dir and old is not None and old.children is not None:
            old.at = at
        else:
            node.children[name] = _Node(at, children={}) if is_dir else _Node(at, inode)

    def plan(self) -> dict[At, tuple[str, str]]:
        """Entry -> (the name it is written under, the name it is a hard link to, or "")."""
        out: dict[At, tuple[str, str]] = {}
        names: dict[At, list[tuple[At, str]]] = {}  # content -> the entries holding it that survive
        stack = [("", self.root)]
        while stack:
            path, node = stack.pop()
            if node.children is None:
                assert node.at is not None and node.inode is not None
                names.setdefault(node.inode, []).append((node.at, path))
                continue
            if node.at is not None:
                out[node.at] = (path, "")
            stack.extend((f"{path}/{name}" if path else name, child) for name, child in node.children.items())
        for inode, held in names.items():
            held.sort()
            anchor = next((path for at, path in held if at == inode), held[0][1])
            out[inode] = (anchor, "")
            out.update((at, (path, anchor)) for at, path in held if path != anchor)
        return out


def apply_layers(layers: Sequence[LayerSource], add: Add) -> int:
    """The filesystem `layers` make, every entry handed to `add` (a header, and a regular file's
    content) bottom layer first; returns the number of entries."""
    tree = Tree()
    for i, layer in enumerate(layers):
        with layer.members() as members:
            tree.apply(i, layer.where, (m for m, _ in members))
    plan = tree.plan()
    count = 0
    for i, layer in enumerate(layers):
        with layer.members() as members:
            for pos, (m, content) in enumerate(members):
                got = plan.get((i, pos))
                if got is None:
                    continue
                info = _copy_info(m, *got)
                if info.isreg():
                    with content() as data:
                        add(info, data)
                else:
                    add(info, None)
                count += 1
    return count


def _copy_info(m: tarfile.TarInfo, path: str, link_to: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.mode, info.uid, info.gid = m.mode, m.uid, m.gid
    info.uname, info.gname, info.mtime = m.uname, m.gname, int(m.mtime)
    info.devmajor, info.devminor = m.devmajor, m.devminor
    if link_to:
        info.type, info.linkname = tarfile.LNKTYPE, link_to
    else:
        info.type = tarfile.REGTYPE if m.isreg() else m.type
        info.size = m.size if m.isreg() else 0
        info.linkname = m.linkname if m.issym() else ""
    info.pax_headers = {k: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    return info


@contextmanager
def _members(layer: Layer, cache: BlobCache, where: str) -> Iterator[Members]:
    """The layer's tar, its compressed bytes verified against the digest and its tar against the diff_id."""
    with cache.open(layer.descriptor, where) as raw:
        stream, _ = decompressed(raw, where)
        tar_reader = VerifyingReader(stream, layer.diff_id, layer.size, f"{where} (uncompressed)")
        with tarfile.open(fileobj=tar_reader, mode="r|") as tf:  # type: ignore[call-overload]
            yield ((m, partial(_content, tf, m)) for m in tf)
        tar_reader.drain()
        raw.drain()


def _content(tf: tarfile.TarFile, m: tarfile.TarInfo) -> IO[bytes]:
    data = tf.extractfile(m)
    assert data is not None  # asked for regular files only
    return data


def tar_layers(layers: list[Layer], cache: BlobCache) -> list[LayerSource]:
    """An image's layers, read from the cache through the verifying readers."""
    out = []
    for i, layer in enumerate(layers):
        where = f"layer {i + 1} ({layer.descriptor.digest})"
        out.append(LayerSource(where, partial(_members, layer, cache, where)))
    return out


def write_rootfs(layers: list[Layer], cache: BlobCache, out: IO[bytes]) -> int:
    """The root filesystem of `layers` as a tar on `out`; returns the number of entries."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dest:  # type: ignore[call-overload]
        return apply_layers(tar_layers(layers, cache), dest.addfile)


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
    """The root filesystem of an image as a tar file, written beside `path` and renamed;
    `write` returns (sha256 of the tar, entries)."""

    need = Need.MEASURED  # every layer must be in the cache, verified, before the first pass

    def __init__(self, cache: BlobCache, path: str | os.PathLike[str]):
        self.cache = cache
        self.path = path

    def holds(self, digest: Digest) -> None:
        return None

    def write_tree(self, tree: ManifestNode, blobs: BlobOrigin) -> tuple[bytes, int]:
        raise UsageError(f"{tree.digest} is an index: a root filesystem is one image's; choose its platform "
                         "(--platform)")

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
