"""The program `confinement` runs: a command in new user, mount, PID, IPC, UTS and network
namespaces. Run as `python -I confiner.py MODE ERRFD UID:GID:COUNT CWD -- COMMAND...` from the
directory it confines to; it imports nothing but the standard library.

- The confiner unshares every namespace at once; a child it forked before, still outside,
  writes the id map (inside id i is outside UID+i and GID+i, for i < COUNT), and the confiner
  becomes root of the new user namespace: root there, no capability anywhere else.
- The command runs as pid 1 of the new PID namespace (all that is left of it is killed when it
  ends, and when the confiner dies), with umask 022, a fresh /proc and only a loopback network.
- MODE `image`: the directory becomes `/` (pivot_root; the old root is unmounted, so no mount
  of the host stays reachable). MODE `host`: every mount of the host is read-only but the
  directory, which stays where it is, writable; the command starts in CWD below it.

Anything the kernel refuses before the command starts is one line on ERRFD and exit status 125;
a command that cannot be run is a line on stderr and exit status 127, as a shell says it.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 0x4000, 1 << 18
MNT_DETACH, AT_FDCWD, AT_RECURSIVE, AT_EMPTY_PATH = 2, -100, 0x8000, 0x1000
OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH, MOUNT_ATTR_RDONLY = 1, 4, 1
PR_SET_PDEATHSIG = 1
NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET
# where the libc lacks the wrapper: these numbers are the same on every current architecture
SYSCALLS = {"open_tree": 428, "move_mount": 429, "mount_setattr": 442}

libc = ctypes.CDLL(None, use_errno=True)


class Refused(Exception):
    pass


def call(name: str, *args: object) -> int:
    """A libc function (or, where the libc lacks the wrapper, the system call); refused on error."""
    try:
        result = int(getattr(libc, name)(*args))
    except AttributeError:  # every argument a full register wide, as the kernel reads them
        wide = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
        result = int(libc.syscall(ctypes.c_long(SYSCALLS[name]), *wide))
    if result < 0:
        raise Refused(f"{name}: {os.strerror(ctypes.get_errno())}")
    return result


def write_maps(pid: int, uid: int, gid: int, count: int) -> None:
    """The id map of `pid`'s new user namespace, written from outside it."""
    if count == 1:  # one id, our own: allowed without privilege once setgroups is denied
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    for name, base in (("uid_map", uid), ("gid_map", gid)):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(f"0 {base} {count}\n")


def unshared(uid: int, gid: int, count: int, err: int) -> None:
    """This process in new namespaces, as their root."""
    ready_r, ready_w = os.pipe()
    mapper = os.fork()
    if mapper == 0:
        os.close(ready_w)
        if os.read(ready_r, 1) != b"1":
            os._exit(1)
        try:
            write_maps(os.getppid(), uid, gid, count)
        except OSError as e:
            os.write(err, f"the kernel refuses the user namespace's id map ({e.strerror})".encode())
            os._exit(1)
        os._exit(0)
    os.close(ready_r)
    try:
        call("unshare", NAMESPACES)
        os.write(ready_w, b"1")
    finally:
        os.close(ready_w)  # unwritten: the mapper leaves without a word
        _, status = os.waitpid(mapper, 0)
    if status != 0:
        raise Refused("")  # the mapper said why
    try:
        if count > 1:
            os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as e:
        raise Refused(f"becoming root of the user namespace: {e.strerror}") from None


def mounts(mode: str) -> None:
    """The command's view of the files (from the confined directory, the current one)."""
    call("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
    tree = call("open_tree", AT_FDCWD, b".", OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC)
    if mode == "host":
        attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY, 0, 0, 0)  # struct mount_attr: set, clear, ...
        size = ctypes.c_size_t(ctypes.sizeof(attr))
        call("mount_setattr", AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), size)
    call("move_mount", tree, b"", AT_FDCWD, b".", MOVE_MOUNT_F_EMPTY_PATH)
    os.fchdir(tree)
    os.close(tree)
    proc = b"proc" if mode == "image" else b"/proc"
    call("mount", b"proc", proc, b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    if mode == "image":
        call("pivot_root", b".", b".")
        call("umount2", b".", MNT_DETACH)
        os.chdir("/")


def main(argv: list[str]) -> int:
    mode, err_fd, ids, cwd, dashes, *command = argv
    err = int(err_fd)
    uid, gid, count = (int(n) for n in ids.split(":"))
    assert mode in ("image", "host") and dashes == "--" and command
    try:
        unshared(uid, gid, count, err)
    except Refused as e:
        os.write(err, str(e).encode())
        return 125
    child = os.fork()
    if child == 0:
        try:
            call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL)
            mounts(mode)
            os.chdir(cwd)
            os.umask(0o022)
            os.set_inheritable(err, False)
            os.execvp(command[0], command)
        except Refused as e:
            os.write(err, str(e).encode())
            os._exit(125)
        except OSError as e:  # as a shell says it
            os.write(2, f"{command[0]}: {e.strerror}\n".encode())
        os._exit(127)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
