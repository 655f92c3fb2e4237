"""Confinement: what runs as root on behalf of an image runs as root of its own user, mount,
PID, IPC, UTS and network namespaces (the program `confiner` sets them up), never in a bare
chroot, which does not contain root. Where the kernel refuses those namespaces, the command
does not run: one line says why.

- `image`: runAsRoot. The image's tree becomes `/` (pivot_root, the host's mounts detached),
  with a fresh /proc; nothing of the host is reachable but a few harmless devices.
- `host`: extraCommands and fakeRootCommands run as root. They use the host's tools, as in
  nixpkgs' build sandbox, so they see the host's files, every mount read-only, with a fresh
  /proc; the build's work directory is theirs to write, and their TMPDIR.

In both, /dev is the command's own, as a container runtime (podman) and nixpkgs' sandbox give
it: a tmpfs with the host's null, zero, full, random, urandom and tty bound in, fd and
std{in,out,err} links and a tmpfs at /dev/shm. It hides whatever the image's (or the host's)
/dev holds, and what the command writes there is gone with it.

Root inside holds no capability outside. When the build runs as real root, root inside is an
unprivileged range of ids outside (`ROOT_IDS`, 65536 of them, so image id i is held as
`ROOT_IDS + i`): `lend` gives the tree to those ids before the command runs. Otherwise root
inside is the user who runs the build, and the tree is theirs already.
"""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from registry_tools.errors import RegistryToolsError

ROOT_IDS = 0x7FFF0000  # the top 65536 ids below 2**31, used by no distribution's users
COUNT = 65536
CONFINER = Path(__file__).with_name("confiner.py")
MOUNTED = ("proc", "dev")  # what the confiner mounts in the image's tree
ONLY = {"image": "{} runs only in new user, mount and PID namespaces (a bare chroot does not contain root)",
        "host": "{}, run as root, run only in new user, mount and PID namespaces (run as another user, they "
                "run as that user)"}
WHY = {errno.ENOSPC: "the limit on user namespaces is reached (sysctl user.max_user_namespaces)",
       errno.EPERM: "they are not permitted here (kernel.unprivileged_userns_clone, or an AppArmor or seccomp "
                    "policy)",
       errno.EINVAL: "this kernel does not have them"}


class ConfinementError(RegistryToolsError):
    pass


@dataclass(frozen=True)
class Ids:
    """Inside id i is outside uid + i (gid + i), for i below count."""

    uid: int
    gid: int
    count: int

    def inside(self, uid: int, gid: int) -> tuple[int, int]:
        """An owner seen outside as the namespace sees it (ids it does not map pass unchanged)."""
        return (uid - self.uid if self.uid <= uid < self.uid + self.count else uid,
                gid - self.gid if self.gid <= gid < self.gid + self.count else gid)


def ids() -> Ids:
    """ROOT_IDS where this process may map them (real root); else root inside is this user."""
    if os.geteuid() == 0 and all(_maps(f"/proc/self/{name}") for name in ("uid_map", "gid_map")):
        return Ids(ROOT_IDS, ROOT_IDS, COUNT)
    return Ids(os.geteuid(), os.getegid(), 1)


def _maps(path: str) -> bool:
    with open(path) as f:
        for line in f:
            first, _, n = (int(x) for x in line.split())
            if first <= ROOT_IDS and ROOT_IDS + COUNT <= first + n:
                return True
    return False


def lend(tree: Path, ids: Ids, what: str) -> None:
    """Everything under `tree` (and itself) owned by the ids root inside holds: id i as base + i.
    Modes are kept (chown clears set-user-ID and set-group-ID bits); what is lent already stays."""
    if ids.count == 1:
        return
    for dirpath, dirnames, filenames in os.walk(tree):
        paths = [dirpath] if dirpath == str(tree) else []
        for path in paths + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            st = os.lstat(path)
            if ids.uid <= st.st_uid < ids.uid + ids.count:
                continue
            if st.st_uid >= ids.count or st.st_gid >= ids.count:
                rel = os.path.relpath(path, tree)
                raise ConfinementError(f"{what}: /{'' if rel == '.' else rel} is owned by "
                                       f"{st.st_uid}:{st.st_gid}, and its user namespace maps ids below "
                                       f"{ids.count} only")
            os.lchown(path, ids.uid + st.st_uid, ids.gid + st.st_gid)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode))


def run(mode: str, directory: Path, argv: list[str], env: dict[str, str], what: str,
        cwd: str = ".") -> subprocess.CompletedProcess[str]:
    """`argv` confined (`mode` "image" or "host", around `directory`); its output captured."""
    i = ids()
    made: list[Path] = []  # where /proc and /dev are mounted, where the image lacks them; gone after
    for name in MOUNTED if mode == "image" else ():
        at = directory / name
        if not os.path.lexists(at):
            at.mkdir()
            made.append(at)
            os.chown(at, i.uid, i.gid)
        elif at.is_symlink() or not at.is_dir():
            raise ConfinementError(f"{what}: the image's /{name} is not a directory")
    if mode == "host":
        env = dict(env, TMPDIR=str(directory))  # the host's /tmp is read-only
    read, write = os.pipe()
    try:
        try:
            res = subprocess.run([sys.executable, "-I", str(CONFINER), mode, str(write),
                                  f"{i.uid}:{i.gid}:{i.count}", cwd, "--", *argv], cwd=directory, env=env,
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL, pass_fds=(write,))
        finally:
            os.close(write)
        refused = os.read(read, 4096).decode(errors="replace")
    finally:
        os.close(read)
        for at in made:
            try:
                at.rmdir()
            except OSError:
                pass  # the command unmounted it and left something there
    if refused:
        raise ConfinementError(f"{ONLY[mode].format(what)}, and {_why(refused)}")
    return res


def _why(refused: str) -> str:
    """The confiner's one line, with what its error number means here."""
    for number, meaning in WHY.items():
        if refused.startswith("unshare:") and refused.endswith(os.strerror(number)):
            return f"the kernel refuses them: {meaning}; {refused}"
    return f"the kernel refuses them ({refused or 'no reason given'})"
