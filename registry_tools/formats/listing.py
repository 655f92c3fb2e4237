"""The files of a layer's tar as entries, and what changed between two sets of them (`diff`).

A layer is read as a stream: its compressed bytes verified against its digest, its tar
against its diff_id, each file's content hashed as it passes and never held. An entry is
what a file in the layer is: its path (as the tar names it, `./` and trailing slashes
dropped), type (whiteouts and opaque markers named as such), size, mode, owner, mtime, link
target, extended attributes and content sha256. Two entries of one path differ in the
fields that differ; a path twice in one tar counts as its last entry, as extraction has it.
"""
from __future__ import annotations

import hashlib
import posixpath
import tarfile
from dataclasses import dataclass, fields
from typing import Any

from registry_tools.cancel import Cancel
from registry_tools.errors import LayerFormatError
from registry_tools.model.compression import READ_SIZE, decompressed
from registry_tools.model.digest import Readable, VerifyingReader
from registry_tools.model.image import BlobOrigin, Layer

TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file", tarfile.DIRTYPE: "dir",
         tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char",
         tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}
XATTR = "SCHILY.xattr."


@dataclass(frozen=True)
class FileEntry:
    path: str
    type: str  # file, dir, symlink, hardlink, char, block, fifo, whiteout, opaque, other
    size: int
    mode: int
    uid: int
    gid: int
    mtime: float
    link: str = ""  # a symbolic link's target, or the path a hard link names
    sha256: str = ""  # a file's content
    device: str = ""  # a device's major:minor
    xattrs: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": self.path, "type": self.type, "size": self.size,
                               "mode": f"{self.mode:04o}", "uid": self.uid, "gid": self.gid, "mtime": self.mtime}
        if self.link:
            doc["linkTarget"] = self.link
        if self.sha256:
            doc["sha256"] = self.sha256
        if self.device:
            doc["device"] = self.device
        if self.xattrs:
            doc["xattrs"] = dict(self.xattrs)
        return doc


COMPARED = tuple(f.name for f in fields(FileEntry) if f.name != "path")
JSON_NAMES = {"link": "linkTarget"}  # a field's name in the JSON document, where it differs


def changed_fields(a: FileEntry, b: FileEntry) -> list[str]:
    return [name for name in COMPARED if getattr(a, name) != getattr(b, name)]


@dataclass
class FileChanges:
    """The files added, removed and changed in a layer; at most `limit` of each kind listed, sorted
    by path; `counts` has them all."""

    added: list[FileEntry]
    removed: list[FileEntry]
    changed: list[tuple[FileEntry, FileEntry]]
    counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"added": [e.to_json() for e in self.added], "removed": [e.to_json() for e in self.removed],
                "changed": [{"path": b.path, "fields": [JSON_NAMES.get(n, n) for n in changed_fields(a, b)],
                             "a": a.to_json(), "b": b.to_json()} for a, b in self.changed],
                "counts": dict(self.counts)}


def compare(old: dict[str, FileEntry], new: dict[str, FileEntry], limit: int) -> FileChanges:
    """What changed from the files of one layer to those of the layer in its place."""
    added = sorted(p for p in new if p not in old)
    removed = sorted(p for p in old if p not in new)
    changed = sorted(p for p in new if p in old and old[p] != new[p])
    return FileChanges([new[p] for p in added[:limit]], [old[p] for p in removed[:limit]],
                       [(old[p], new[p]) for p in changed[:limit]],
                       {"added": len(added), "removed": len(removed), "changed": len(changed)})


def listed(files: dict[str, FileEntry], kind: str, limit: int) -> FileChanges:
    """The files of a layer only one side has: all added, or all removed."""
    return compare({}, files, limit) if kind == "added" else compare(files, {}, limit)


def clean(name: str) -> str:
    """A member's path as the tree has it: no leading `./` or `/`, no trailing slash."""
    return posixpath.normpath(name.lstrip("/")) if name.strip("/") else "/"


def _type(m: tarfile.TarInfo) -> str:
    base = posixpath.basename(m.name.rstrip("/"))
    if base == ".wh..wh..opq":
        return "opaque"
    if base.startswith(".wh."):
        return "whiteout"
    return TYPES.get(m.type, "other")


def _entry(tf: tarfile.TarFile, m: tarfile.TarInfo, cancel: Cancel) -> FileEntry:
    digest = ""
    if m.isreg():
        h = hashlib.sha256()
        content = tf.extractfile(m)
        assert content is not None  # a regular file has content
        while chunk := content.read(READ_SIZE):
            h.update(chunk)
            cancel.check()
        digest = "sha256:" + h.hexdigest()
    link = clean(m.linkname) if m.islnk() else m.linkname if m.issym() else ""
    device = f"{m.devmajor}:{m.devminor}" if m.ischr() or m.isblk() else ""
    xattrs = tuple(sorted((k[len(XATTR):], v) for k, v in m.pax_headers.items() if k.startswith(XATTR)))
    return FileEntry(clean(m.name), _type(m), m.size if m.isreg() else 0, m.mode & 0o7777, m.uid, m.gid,
                     m.mtime, link, digest, device, xattrs)


def _drain(reader: Readable) -> None:
    while reader.read(READ_SIZE):
        pass


def layer_files(layer: Layer, origin: BlobOrigin, where: str, cancel: Cancel) -> dict[str, FileEntry]:
    """Every entry of the layer's tar by path, its bytes read from `origin` and verified (digest and
    diff_id) by the time this returns."""
    files: dict[str, FileEntry] = {}
    with origin.open(layer.descriptor) as raw:
        stream, _ = decompressed(raw, where)
        tar = VerifyingReader(stream, layer.diff_id, None, f"{where} uncompressed content (diff_id)")
        try:
            with tarfile.open(fileobj=tar, mode="r|") as tf:  # type: ignore[call-overload]
                for m in tf:
                    cancel.check()
                    entry = _entry(tf, m, cancel)
                    files[entry.path] = entry
        except (tarfile.TarError, EOFError) as e:
            raise LayerFormatError(f"{where}: not a tar we can read: {e}") from None
        _drain(tar)
        _drain(raw)
    return files
