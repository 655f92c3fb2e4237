"""runAsRoot without a VM: the script runs as root of its own user, mount, PID, IPC, UTS and
network namespaces, pivoted into the image's tree (builder.confinement), and what it changed
becomes one more layer.

The tree is the base image's layers and then every layer this build packs, applied by the
same model as `export` (formats.rootfs: whiteouts honoured, nothing under a symbolic link, hard
links to what the tree holds), written into a directory; devices and FIFOs are left out (root
of a user namespace cannot make them). A snapshot of the tree before and after gives the layer:
every path added or changed (with its directories, as they are), and a whiteout for every path
removed, owners as the script saw them. Like every other layer it is written with the spec's
fixed time and sorted names. /dev is the runtime's, not the image's (as in podman): the script
sees its own minimal /dev, and the layer holds nothing under /dev, so an image's own /dev
entries stay as its layers have them.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import IO, Iterator

from registry_tools.builder import confinement
from registry_tools.builder.pack import Entry, Owner
from registry_tools.errors import RegistryToolsError
from registry_tools.formats.rootfs import LayerSource, Members, apply_layers, tar_layers
from registry_tools.store.cache import BlobCache

# nixpkgs' dockerTools.shadowSetup, in POSIX sh: the files shadow-utils needs to add users
SHADOW_SETUP = r"""
mkdir -p /etc/pam.d
if [ ! -f /etc/passwd ]; then
  echo "root:x:0:0::/root:/bin/sh" > /etc/passwd
  echo "root:!x:::::::" > /etc/shadow
fi
if [ ! -f /etc/group ]; then
  echo "root:x:0:" > /etc/group
  echo "root:x::" > /etc/gshadow
fi
if [ ! -f /etc/pam.d/other ]; then
  printf '%s\n' 'account sufficient pam_unix.so' 'auth sufficient pam_rootok.so' \
    'password requisite pam_unix.so nullok yescrypt' 'session required pam_unix.so' > /etc/pam.d/other
fi
if [ ! -f /etc/login.defs ]; then
  : > /etc/login.defs
fi
"""

Facts = tuple[str, int, int, int, int, int, int, str]  # kind, mode, uid, gid, size, mtime_ns, inode, link
TYPES = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}


class RunAsRootError(RegistryToolsError):
    pass


def packed_layer(entries: list[Entry], owner: Owner, where: str) -> LayerSource:
    """A layer this build packs, as the tar members it will hold."""
    @contextmanager
    def members() -> Iterator[Members]:
        yield ((_header(e, owner), partial(_read, e.source or os.devnull)) for e in entries)

    return LayerSource(where, members)


def _read(path: str) -> IO[bytes]:
    return open(path, "rb")


def _header(e: Entry, owner: Owner) -> tarfile.TarInfo:
    o = e.owner or owner
    info = tarfile.TarInfo(e.name)
    info.type, info.mode, info.linkname = TYPES[e.kind], e.mode, e.link
    info.size = e.size if e.kind == "file" else 0
    info.uid, info.gid = o.uid, o.gid
    return info


class TreeWriter:
    """The entries of applied layers (formats.rootfs: nothing under a symbolic link, a hard link
    after the file it names) written under `root`, owners kept where this process may set them."""

    def __init__(self, root: Path):
        self.root = str(root)
        self.dirs: dict[str, int] = {}  # modes set last, so the tree stays writable while it is made
        self.left_out: set[str] = set()
        self.owners = os.geteuid() == 0
        self._dir(self.root, 0o755, 0, 0)

    def add(self, info: tarfile.TarInfo, data: IO[bytes] | None) -> None:
        path = os.path.join(self.root, info.name)
        parts = info.name.split("/")
        for i in range(1, len(parts)):  # directories no entry declared: root's, mode 0755
            parent = os.path.join(self.root, *parts[:i])
            if parent not in self.dirs:
                self._dir(parent, 0o755, 0, 0)
        if info.isdir():
            self._dir(path, info.mode, info.uid, info.gid)
        elif info.isreg():
            assert data is not None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with open(fd, "wb") as f:
                shutil.copyfileobj(data, f, 1 << 20)
            self._own(path, info.uid, info.gid)
            os.chmod(path, info.mode)
        elif info.issym():
            os.symlink(info.linkname, path)
            self._own(path, info.uid, info.gid)
        elif info.islnk() and info.linkname not in self.left_out:
            os.link(os.path.join(self.root, info.linkname), path, follow_symlinks=False)
        else:  # devices and FIFOs: root of a user namespace could not make them
            self.left_out.add(info.name)

    def _dir(self, path: str, mode: int, uid: int, gid: int) -> None:
        if path not in self.dirs and path != self.root:
            os.mkdir(path, 0o700)
        self._own(path, uid, gid)
        self.dirs[path] = mode

    def _own(self, path: str, uid: int, gid: int) -> None:
        if self.owners:
            try:
                os.lchown(path, uid, gid)
            except OSError:  # an id this user namespace does not map: the path stays root's, as unpacked
                pass

    def finish(self) -> None:
        for path in sorted(self.dirs, key=lambda p: -p.count("/")):
            os.chmod(path, self.dirs[path])


def snapshot(root: Path, ids: confinement.Ids) -> dict[str, Facts]:
    out: dict[str, Facts] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):  # the runtime's /dev, never the layer's
            dirnames[:] = [n for n in dirnames if n != "dev"]
            filenames = [n for n in filenames if n != "dev"]
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            kind = ("dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode)
                    else "file" if stat.S_ISREG(st.st_mode) else "other")
            uid, gid = ids.inside(st.st_uid, st.st_gid)
            out[os.path.relpath(p, root)] = (kind, stat.S_IMODE(st.st_mode), uid, gid, st.st_size,
                                             st.st_mtime_ns, st.st_ino, os.readlink(p) if kind == "symlink" else "")
    return out


def run_script(root: Path, script: str) -> None:
    if not os.path.lexists(root / "bin" / "sh"):
        raise RunAsRootError("runAsRoot runs its script with the image's /bin/sh: the base image or the contents "
                             "must provide it")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C", "TZ": "UTC"}
    res = confinement.run("image", root, ["/bin/sh", "-ec", script], env, "runAsRoot")
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit status {res.returncode}"]
        raise RunAsRootError(f"runAsRoot failed: {detail[0]}")


def changes(root: Path, before: dict[str, Facts], after: dict[str, Facts]) -> list[Entry]:
    """The layer: what was added or changed (with its directories as they are), and whiteouts."""
    wanted: dict[str, Entry] = {}

    def add(rel: str) -> None:
        kind, mode, uid, gid, size, mtime_ns, ino, link = after[rel]
        if kind == "other":
            raise RunAsRootError(f"runAsRoot made /{rel}, which is not a file, directory or symlink")
        # a stamp of its own: the layer's key is never taken for another run's (never portable)
        wanted[rel] = Entry(rel, kind, mode, size if kind == "file" else 0,
                            str(root / rel) if kind == "file" else None, link, Owner(uid, gid, "", ""),
                            stamp=(mtime_ns ^ (ino << 1)) or 1)
        parent = os.path.dirname(rel)
        while parent and parent not in wanted:
            add(parent)
            parent = os.path.dirname(parent)

    for rel, facts in after.items():
        if before.get(rel) != facts:
            add(rel)
    for rel in before:
        if rel in after and after[rel][0] == before[rel][0]:
            continue
        parent = os.path.dirname(rel)
        if rel not in after and parent in before and parent not in after:
            continue  # its directory went too: one whiteout covers it
        if rel in after:
            continue  # replaced by another kind of entry: the new entry hides it
        if parent:
            add(parent)
        name = os.path.join(parent, ".wh." + os.path.basename(rel))
        wanted[name] = Entry(name, "file", 0o644, 0, os.devnull, "", Owner(0, 0, "", ""), stamp=1)
    return [wanted[n] for n in sorted(wanted, key=os.fsencode)]


def run_as_root(script: str, base_layers: list, packed: list[tuple[list[Entry], Owner]], cache: BlobCache,
                workdir: Path) -> list[Entry]:
    """The entries of the layer `script` makes over the base layers and this build's layers."""
    root = workdir / "run-as-root"
    root.mkdir()
    sources = tar_layers(base_layers, cache)
    for n, (entries, owner) in enumerate(packed):
        sources.append(packed_layer(entries, owner, f"this build's layer {n + 1}"))
    writer = TreeWriter(root)
    apply_layers(sources, writer.add)
    writer.finish()
    ids = confinement.ids()
    confinement.lend(root, ids, "runAsRoot")
    before = snapshot(root, ids)
    run_script(root, script)
    return changes(root, before, snapshot(root, ids))
