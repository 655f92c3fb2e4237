"""The program `confinement` runs: a command in new user, mount, PID, IPC, UTS and network
namespaces. Run as `python -I confiner.py MODE ERRFD UID:GID:COUNT CWD -- COMMAND...` from the
directory it confines to; it imports nothing but the standard library.

- The confiner unshares every namespace at once; a child it forked before, still outside,
  writes the id map (inside id i is outside UID+i and GID+i, for i < COUNT), and the confiner
  becomes root of the new user namespace: root there, no capability anywhere else.
- The command runs as pid 1 of the new PID namespace (all that is left of it is killed when it
  ends, and when the confiner dies) in a session of its own (no controlling terminal), with
  umask 022, a fresh /proc, only a loopback network and a minimal /dev of its own, as a
  container runtime gives: a tmpfs holding the host's null, zero, full, random, urandom and tty
  bound in (root of a user namespace cannot make devices), fd and std{in,out,err} linked to
  /proc/self/fd, and a tmpfs at /dev/shm.
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
import stat
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 0x4000, 1 << 18
MNT_DETACH, AT_FDCWD, AT_RECURSIVE, AT_EMPTY_PATH = 2, -100, 0x8000, 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH, MOUNT_ATTR_RDONLY = 1, 4, 1
PR_SET_PDEATHSIG = 1
NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")  # the host's, where it has them
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2"}
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
    top = "" if mode == "image" else "/"  # the image's tree is the current directory until pivot_root
    call("mount", b"proc", f"{top}proc".encode(), b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    minimal_dev(f"{top}dev")
    if mode == "image":
        call("pivot_root", b".", b".")
        call("umount2", b".", MNT_DETACH)
        os.chdir("/")


def minimal_dev(dev: str) -> None:
    """A /dev of the command's own at `dev` (a directory): nothing written there reaches the image
    or the host. The host's devices are cloned before the tmpfs hides the host's own /dev."""
    devices = {}
    for name in DEVICES:  # one the host lacks (a /dev/tty, say), the command lacks too
        if os.path.lexists(f"/dev/{name}"):
            fd = call("open_tree", AT_FDCWD, f"/dev/{name}".encode(),
                      OPEN_TREE_CLONE | AT_SYMLINK_NOFOLLOW | os.O_CLOEXEC)
            if stat.S_ISCHR(os.stat(fd).st_mode):
                devices[name] = fd
            else:
                os.close(fd)
    call("mount", b"tmpfs", dev.encode(), b"tmpfs", MS_NOSUID | MS_NOEXEC, b"mode=755,size=65536k")
    for name, fd in devices.items():
        os.close(os.open(f"{dev}/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # where it is bound
        call("move_mount", fd, b"", AT_FDCWD, f"{dev}/{name}".encode(), MOVE_MOUNT_F_EMPTY_PATH)
        os.close(fd)
    for name, target in DEV_LINKS.items():
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm")
    call("mount", b"shm", f"{dev}/shm".encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
         b"mode=1777,size=65536k")


def main(argv: list[str]) -> int:
    mode, err_fd, ids, cwd, dashes, *command = argv
    err = int(err_fd)
    uid, gid, count = (int(n) for n in ids.split(":"))
    assert mode in ("image", "host") and dashes == "--" and command
    for fd in (1, 2) if count > 1 else ():  # the pipes its output is read from
        if stat.S_ISFIFO(os.fstat(fd).st_mode):  # root's inside, so /dev/stdout opens
            os.fchown(fd, uid, gid)
    try:
        unshared(uid, gid, count, err)
    except Refused as e:
        os.write(err, str(e).encode())
        return 125
    child = os.fork()
    if child == 0:
        try:
            call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL)
            os.setsid()  # no controlling terminal: /dev/tty is not the build's terminal
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
