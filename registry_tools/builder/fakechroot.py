"""enableFakechroot as nixpkgs runs it: fakeRootCommands under `fakechroot chroot` into the
final layer's root, their tools from outside it.

nixpkgs excludes the store from the chroot (FAKECHROOT_EXCLUDE_PATH), so the commands' shell
and tools, all store paths, are found where they are while every other path names the
image's root; an image without a shell can use it. Here the tools are this machine's: a
directory outside the root holds a link to each dynamically linked program on the PATH, and
it is excluded from the chroot (with /dev, /proc, /sys and, where the closure is read from
it, the store), so `ln -s /etc/x /y`, `mkdir` and `chown` act on the image's root with or
without a shell in it.

fakechroot confines only dynamically linked programs (it works by preloading a library): a
static one would act on this machine's root. So static programs are left out of the
commands' PATH, and a static shell is refused. fakechroot stores an absolute symbolic
link's target with the root in front; the links are read back as the commands meant them.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

from registry_tools.errors import RegistryToolsError

PT_INTERP = 3


class FakechrootError(RegistryToolsError):
    pass


def _dynamic_elf(path: str | Path) -> bool:
    """An ELF program with an interpreter (PT_INTERP): what fakechroot's preloaded library confines."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2):
                return False
            end = "<" if head[5] == 1 else ">"
            if head[4] == 2:  # 64-bit
                (phoff,) = struct.unpack(end + "Q", head[32:40])
                phentsize, phnum = struct.unpack(end + "HH", head[54:58])
            else:
                (phoff,) = struct.unpack(end + "I", head[28:32])
                phentsize, phnum = struct.unpack(end + "HH", head[42:46])
            for i in range(min(phnum, 256)):
                f.seek(phoff + i * phentsize)
                (ptype,) = struct.unpack(end + "I", f.read(4).ljust(4, b"\0"))
                if ptype == PT_INTERP:
                    return True
    except (OSError, struct.error):
        return False
    return False


def _host_tools(directory: Path, path: str) -> Path:
    """`directory` holding a link to each dynamically linked program on `path` (the first of each name)."""
    directory.mkdir()
    seen: set[str] = set()
    for d in path.split(":"):
        if not d.startswith("/") or not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            program = os.path.join(d, name)
            if name in seen or not os.access(program, os.X_OK) or not os.path.isfile(program):
                continue
            seen.add(name)
            if _dynamic_elf(program):
                os.symlink(program, directory / name)
    return directory


def chrooted(root: Path, work: Path, commands: str, store_dir: str | None) -> tuple[list[str], dict[str, str]]:
    """The command (to run under fakeroot) and the environment it needs: the commands run by this
    machine's shell, chrooted into `root` by fakechroot, with this machine's tools on the PATH."""
    tools = _host_tools(work / "host-tools", os.environ.get("PATH", os.defpath))
    shell = tools / "sh"
    if not shell.is_symlink():
        raise FakechrootError("enableFakechroot runs fakeRootCommands with this machine's sh, and it is not a "
                              "dynamically linked program: fakechroot confines only those (a static one would "
                              "act on this machine's root)")
    excluded = ["/dev", "/proc", "/sys", str(tools)] + ([store_dir] if store_dir else [])
    if any(":" in p for p in excluded):
        raise FakechrootError(f"enableFakechroot: {tools} holds a ':', which FAKECHROOT_EXCLUDE_PATH cannot say")
    script = 'PATH="$1"; export PATH; eval "$2"'
    return (["fakechroot", "chroot", str(root), str(shell), "-ec", script, "fakeRootCommands", str(tools), commands],
            {"FAKECHROOT_EXCLUDE_PATH": ":".join(excluded)})


def unprefix_links(root: Path) -> None:
    """Symbolic links whose target fakechroot prefixed with the root, pointing where the commands said."""
    prefixes = {str(root), os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                continue
            target = os.readlink(p)
            for prefix in prefixes:
                if target == prefix or target.startswith(prefix + "/"):
                    os.unlink(p)
                    os.symlink("/" + target[len(prefix):].lstrip("/"), p)
                    break
