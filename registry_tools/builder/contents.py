"""The final layer's root: `contents` trees merged at `/` as in a chroot.

Links are resolved inside the root (never leading outside it); devices, sockets and FIFOs
are refused. Errors name the key the spec gave the trees by (`contents`, or `copyToRoot`).
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from registry_tools.errors import RegistryToolsError


class ContentsError(RegistryToolsError):
    pass


MAX_LINK_HOPS = 40  # as the kernel's path walk


def resolve_in_root(root: Path, path: Path, key: str = "contents") -> Path:
    """Where `path` (inside `root`) leads, following symlinks as if `root` were `/`.

    Every component is looked at with lstat and every link target is read, so no chain
    of links, absolute or relative, can lead outside `root` (`..` at the top stays at
    the top, as in a chroot). The result may not exist yet.
    """
    parts = list(path.relative_to(root).parts)
    here: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if here:
                here.pop()
            continue
        candidate = root.joinpath(*here, name)
        if not candidate.is_symlink():
            here.append(name)
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise ContentsError(f"{key}: too many levels of symbolic links at /{'/'.join(here + [name])}")
        link = os.readlink(candidate)
        if link.startswith("/"):
            here = []
        parts = [x for x in link.split("/") if x] + parts
    return root.joinpath(*here)


def _kind(path: Path, key: str) -> str:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    raise ContentsError(f"{key}: {path} is a device, socket or FIFO; only files, directories and "
                        "symlinks can be put in a layer")


def merge_tree(src: Path, dest: Path, root: Path, keep_dirlinks: bool, key: str = "contents") -> None:
    """Copy src's tree into dest (symlinks kept, special files refused). Where dest has a
    symlink and src a directory: with keepContentsDirlinks, keep the link and merge through
    it when it leads to a directory (resolved inside the image's root, never outside);
    otherwise the directory replaces the link."""
    for name in sorted(os.listdir(src), key=os.fsencode):
        s, d = src / name, dest / name
        kind = _kind(s, key)
        if kind != "dir":
            if os.path.lexists(d):
                if _kind(d, key) == "dir":
                    shutil.rmtree(d)
                else:
                    d.unlink()
            if kind == "symlink":
                os.symlink(os.readlink(s), d)
            else:
                shutil.copy2(s, d, follow_symlinks=False)
            continue
        if os.path.lexists(d) and _kind(d, key) == "symlink":
            target = resolve_in_root(root, d, key) if keep_dirlinks else None
            if target is not None and os.path.lexists(target) and _kind(target, key) == "dir":
                merge_tree(s, target, root, keep_dirlinks, key)
                continue
            d.unlink()
        elif os.path.lexists(d) and _kind(d, key) != "dir":
            d.unlink()
        if not os.path.lexists(d):
            d.mkdir()
            shutil.copystat(s, d)
        merge_tree(s, d, root, keep_dirlinks, key)
