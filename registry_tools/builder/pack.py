"""Packing file trees into layer tars that depend on the content alone.

Entries are sorted; every entry gets the same mtime and owner (unless fakeroot said
otherwise for the final layer); hard links are stored as files, symlinks are kept, and
no host user name appears. The size of a tar is known before a byte is written, so a
layer can stream into a docker-archive as it is packed.
"""
from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from registry_tools.errors import RegistryToolsError, UsageError

BLOCK = 512
END = b"\0" * (2 * BLOCK)
READ = 1 << 20


class PackError(RegistryToolsError):
    """A file changed while it was packed, or cannot be packed at all."""


@dataclass(frozen=True)
class Owner:
    uid: int = 0
    gid: int = 0
    uname: str = "root"
    gname: str = "root"


@dataclass(frozen=True)
class Entry:
    name: str  # path in the image, without the leading '/'
    kind: str  # "dir", "file" or "symlink"
    mode: int
    size: int = 0
    source: str | None = None  # where a file's bytes are read from
    link: str = ""
    owner: Owner | None = None  # None: the layer's owner
    stamp: int = 0  # the source's mtime and inode, for the layer cache only; never in the tar

    def header(self, owner: Owner, mtime: int) -> bytes:
        o = self.owner or owner
        info = tarfile.TarInfo(self.name + "/" if self.kind == "dir" else self.name)
        info.type = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}[self.kind]
        info.mode = self.mode
        info.size = self.size if self.kind == "file" else 0
        info.linkname = self.link
        info.mtime = mtime
        info.uid, info.gid, info.uname, info.gname = o.uid, o.gid, o.uname, o.gname
        return info.tobuf(tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def collect(source: str, target: str, stamps: bool = True, inodes: bool = True) -> list[Entry]:
    """Entries for `source` (a file, symlink or directory) placed at `target` in the image.

    With `stamps`, each file remembers its mtime and inode, so a later build can tell
    that it did not change without reading it (not needed for immutable store paths).
    Without `inodes`, the mtime alone (files copied with their times kept: `contents`)."""
    base = target.strip("/")
    out: list[Entry] = []

    def visit(path: str, name: str) -> None:
        try:
            st = os.lstat(path)
        except OSError as e:
            raise PackError(f"cannot read {path}: {e.strerror}") from None
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            out.append(Entry(name, "symlink", 0o777, link=os.readlink(path)))
        elif stat.S_ISREG(st.st_mode):  # hard links too: each is stored as a file of its own
            stamp = (st.st_mtime_ns ^ ((st.st_ino << 1) if inodes else 0)) if stamps else 0
            out.append(Entry(name, "file", mode, st.st_size, source=path, stamp=stamp))
        elif stat.S_ISDIR(st.st_mode):
            if name:
                out.append(Entry(name, "dir", mode))
            try:
                children = sorted(os.listdir(path))
            except OSError as e:
                raise PackError(f"cannot list {path}: {e.strerror}") from None
            for child in children:
                visit(os.path.join(path, child), f"{name}/{child}" if name else child)
        else:
            raise PackError(f"{path}: sockets, devices and FIFOs cannot be put in a layer")

    visit(source, base)
    return out


def with_parents(entries: Iterable[Entry], parent_mode: int = 0o755) -> list[Entry]:
    """Add the directories leading to every entry (mode 0755) and sort by name, bytewise."""
    by_name: dict[str, Entry] = {}
    for e in entries:
        if e.name in by_name and by_name[e.name] != e:
            if e.kind == "dir" and by_name[e.name].kind == "dir":
                continue
            raise UsageError(f"/{e.name} is put in the same layer twice, with different content")
        by_name[e.name] = e
    for name in list(by_name):
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in by_name:
                by_name[parent] = Entry(parent, "dir", parent_mode)
    return [by_name[n] for n in sorted(by_name, key=os.fsencode)]


def tar_size(entries: list[Entry], owner: Owner, mtime: int) -> int:
    total = len(END)
    for e in entries:
        total += len(e.header(owner, mtime))
        if e.kind == "file":
            total += e.size + (-e.size) % BLOCK
    return total


def write_tar(entries: list[Entry], owner: Owner, mtime: int, emit: Callable[[bytes], object],
              check: Callable[[], None] | None = None) -> int:
    """Write the tar; a file whose size changed since it was listed is an error, not a silent mix."""
    written = 0
    for e in entries:
        h = e.header(owner, mtime)
        emit(h)
        written += len(h)
        if e.kind != "file":
            continue
        n = 0
        try:
            with open(e.source, "rb") as f:  # type: ignore[arg-type]
                while chunk := f.read(min(READ, e.size - n + 1) if e.size - n >= 0 else 1):
                    n += len(chunk)
                    if n > e.size:
                        break
                    emit(chunk)
                    if check:
                        check()
        except OSError as err:
            raise PackError(f"cannot read {e.source}: {err.strerror}") from None
        if n != e.size:
            raise PackError(f"{e.source} changed while it was packed ({e.size} bytes listed, {n} read)")
        pad = (-n) % BLOCK
        if pad:
            emit(b"\0" * pad)
        written += n + pad
    emit(END)
    return written + len(END)


def owned(entries: list[Entry], owners: dict[str, tuple[int, int, int]], names: Owner) -> list[Entry]:
    """Entries with the owners and modes fakeroot reported (uid, gid, mode by name)."""
    out = []
    for e in entries:
        got = owners.get(e.name)
        if got is None:
            out.append(e)
            continue
        uid, gid, mode = got
        uname = names.uname if uid == names.uid else ""
        gname = names.gname if gid == names.gid else ""
        out.append(replace(e, mode=mode if e.kind != "symlink" else e.mode,
                           owner=Owner(uid, gid, uname or ("root" if uid == 0 else ""),
                                       gname or ("root" if gid == 0 else ""))))
    return out
