"""runAsRoot without a VM: the script runs as root in a chroot of the image's tree, and what it
changed becomes one more layer.

The tree is the base image's layers applied in order (whiteouts honoured) and then every
layer this build packs; the script runs in a chroot of it as root (real root where the
build runs as root, else root of a user namespace, `unshare --user --map-root-user`). A
snapshot of the tree before and after gives the layer: every path added or changed (with
its directories, as they are), and a whiteout for every path removed. Like every other
layer it is written with the spec's fixed time and sorted names.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

from registry_tools.builder.pack import Entry, Owner
from registry_tools.errors import RegistryToolsError
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


class RunAsRootError(RegistryToolsError):
    pass


def extract(tar_path: Path, root: Path) -> None:
    """A flattened root filesystem (already checked by formats.rootfs) into `root`, owners kept."""
    with tarfile.open(tar_path) as tf:
        tf.extractall(root, filter="tar", numeric_owner=True)


def materialize(entries: list[Entry], owner: Owner, root: Path) -> None:
    """A layer this build packs, written into the tree as it will be in the image."""
    for e in entries:
        path = root / e.name
        o = e.owner or owner
        if e.kind == "dir":
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                path.unlink()
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            if e.kind == "symlink":
                os.symlink(e.link, path)
            else:
                shutil.copyfile(e.source, path)  # type: ignore[arg-type]
        if e.kind != "symlink":
            os.chmod(path, e.mode)
        os.lchown(path, o.uid, o.gid)


def snapshot(root: Path) -> dict[str, Facts]:
    out: dict[str, Facts] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            kind = ("dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode)
                    else "file" if stat.S_ISREG(st.st_mode) else "other")
            out[os.path.relpath(p, root)] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
                                             st.st_mtime_ns, st.st_ino, os.readlink(p) if kind == "symlink" else "")
    return out


def run_script(root: Path, script: str) -> None:
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    command = [chroot, str(root), "/bin/sh", "-ec", script]
    if os.geteuid() != 0:
        command = ["unshare", "--user", "--map-root-user", *command]
    if not os.path.lexists(root / "bin" / "sh"):
        raise RunAsRootError("runAsRoot runs its script with the image's /bin/sh: the base image or the contents "
                             "must provide it")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C", "TZ": "UTC"}
    res = subprocess.run(command, env=env, capture_output=True, text=True)
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
    from registry_tools.formats.rootfs import write_rootfs

    root = workdir / "run-as-root"
    root.mkdir()
    if base_layers:
        tar_path = workdir / "base-rootfs.tar"
        with open(tar_path, "wb") as f:
            write_rootfs(base_layers, cache, f)
        extract(tar_path, root)
        tar_path.unlink()
    for entries, owner in packed:
        materialize(entries, owner, root)
    before = snapshot(root)
    run_script(root, script)
    return changes(root, before, snapshot(root))
