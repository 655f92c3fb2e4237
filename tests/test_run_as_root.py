"""runAsRoot without a VM: the script runs as root of its own user, mount, PID, IPC, UTS and network
namespaces, pivoted into the image's tree; what it changed is one more layer, deletions as whiteouts
that podman honours. extraCommands and fakeRootCommands run as root are contained the same way."""
from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile

import pytest

from .helpers import run
from .support import imagegen

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
# Debian's busybox-static has no adduser/addgroup: the same, by appending to the files
SCRIPT = """#!/bin/sh
echo 'redis:x:101:' >> /etc/group
echo 'redis:x:100:101:redis:/data:/bin/false' >> /etc/passwd
mkdir /data
chown redis:redis /data
rm /etc/to-delete
"""


@pytest.fixture
def base_layout(tmp_path, cache_dir, capsys):
    """A busybox base image with /etc/passwd, /etc/group and a file the script deletes."""
    root = tmp_path / "base-root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for applet in ("sh", "mkdir", "chown", "rm", "echo", "cat", "ls", "mount", "hostname", "test"):
        os.symlink("busybox", root / "bin" / applet)
    (root / "etc").mkdir()
    (root / "proc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "to-delete").write_text("bye\n")
    (tmp_path / "base.json").write_text(json.dumps({"name": "example/base", "tag": "1", "architecture": "amd64",
                                                    "contents": ["base-root"]}))
    code, _, err = run(capsys, "build", str(tmp_path / "base.json"), "--oci", str(tmp_path / "base"))
    assert code == 0, err
    return tmp_path / "base"


def layers(layout):
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    return [layout / "blobs/sha256" / layer["digest"].split(":")[1] for layer in manifest["layers"]]


def test_run_as_root_makes_a_layer_of_what_the_script_changed(base_layout, tmp_path, cache_dir, capsys):
    if os.geteuid() != 0:
        pytest.skip("this machine is not root: the user-namespace path is not exercised here")
    (tmp_path / "spec.json").write_text(json.dumps({"name": "example/redis", "tag": "1", "architecture": "amd64",
                                                    "fromImage": "base", "runAsRoot": SCRIPT,
                                                    "shadowSetup": True}))
    code, out, err = run(capsys, "build", str(tmp_path / "spec.json"), "--oci", str(tmp_path / "layout"), "--json")
    assert code == 0, err
    last = layers(tmp_path / "layout")[-1]
    with tarfile.open(last) as tf:
        members = {m.name.rstrip("/"): m for m in tf}
        passwd = tf.extractfile(members["etc/passwd"]).read().decode()
        group = tf.extractfile(members["etc/group"]).read().decode()
    assert "redis:x:100:101:redis:/data:/bin/false" in passwd and "redis:x:101:" in group
    assert members["data"].isdir() and (members["data"].uid, members["data"].gid) == (100, 101)
    assert "etc/.wh.to-delete" in members
    assert not any(n.startswith("bin/") for n in members)  # only what changed
    assert "etc/pam.d/other" in members and "etc/login.defs" in members  # shadowSetup made them
    # podman applies the layer, whiteout included
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run `bash .ci/run`")
    with tempfile.TemporaryDirectory(prefix="rt-", dir="/tmp") as short:
        base = ["podman", "--root", f"{short}/r", "--runroot", f"{short}/rr", "--storage-driver", "vfs"]
        subprocess.run(base + ["pull", "-q", f"oci:{tmp_path / 'layout'}:1"], check=True, capture_output=True)
        image = subprocess.run(base + ["images", "-q"], check=True, capture_output=True, text=True).stdout.split()[0]
        cid = subprocess.run(base + ["create", image, "/bin/sh"], check=True, capture_output=True,
                             text=True).stdout.strip()
        subprocess.run(base + ["export", "-o", f"{short}/fs.tar", cid], check=True, capture_output=True)
        with tarfile.open(f"{short}/fs.tar") as tf:
            names = {m.name.lstrip("./").rstrip("/"): m for m in tf}
    assert "etc/to-delete" not in names and "etc/passwd" in names
    assert (names["data"].uid, names["data"].gid) == (100, 101)
    # our own export agrees
    code, _, err = run(capsys, "export", f"oci:{tmp_path / 'layout'}:1", "-o", str(tmp_path / "fs.tar"))
    assert code == 0, err
    with tarfile.open(tmp_path / "fs.tar") as tf:
        assert "etc/to-delete" not in tf.getnames()


def test_a_failing_script_is_one_line(base_layout, tmp_path, cache_dir, capsys):
    if os.geteuid() != 0:
        pytest.skip("this machine is not root")
    (tmp_path / "spec.json").write_text(json.dumps({"name": "x/y", "tag": "1", "architecture": "amd64",
                                                    "fromImage": "base", "runAsRoot": "exit 3"}))
    code, _, err = run(capsys, "build", str(tmp_path / "spec.json"), "--oci", str(tmp_path / "layout"))
    assert code == 1 and "runAsRoot failed" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "spec.json").write_text(json.dumps({"name": "x/y", "tag": "1", "shadowSetup": True}))
    code, _, err = run(capsys, "build", str(tmp_path / "spec.json"), "--oci", str(tmp_path / "l2"))
    assert code == 2 and "shadowSetup" in err


def script_layer(tmp_path, capsys, spec: dict) -> dict[str, bytes]:
    """Build `spec` over the base image; the files of its last layer (the runAsRoot layer)."""
    spec = {"name": "x/y", "tag": "1", "architecture": "amd64", "fromImage": "base", **spec}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code, _, err = run(capsys, "build", str(tmp_path / "spec.json"), "--oci", str(tmp_path / "layout"))
    assert code == 0, err
    with tarfile.open(layers(tmp_path / "layout")[-1]) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isreg()}


@pytest.fixture
def outside():
    """A directory of the build host that anyone may enter (so only containment keeps commands out)."""
    where = tempfile.mkdtemp(prefix="rt-host-", dir="/tmp")
    os.chmod(where, 0o755)
    yield where
    shutil.rmtree(where)


def host_file(where: str, mode: int = 0o644) -> str:
    """A file of the build host the commands must not reach."""
    path = os.path.join(where, "file")
    with open(path, "w") as f:
        f.write("untouched\n")
    os.chmod(path, mode)
    return path


def test_the_script_cannot_reach_the_host_its_processes_network_or_hostname(base_layout, tmp_path, cache_dir,
                                                                            capsys, outside):
    """Real root in a chroot can mount proc and write the host's files through /proc/1/root; in
    its own namespaces the script sees its own processes, no network and its own hostname."""
    target = host_file(outside)
    hostname = socket.gethostname()
    script = f"""
mkdir -p /out
mount -t proc proc /proc 2>/out/mount || true
for pid in 1 $PPID; do echo escaped 2>>/out/write >/proc/$pid/root{target} || true; done
ls /proc > /out/proc
cat /proc/net/dev > /out/net
hostname confined-by-a-test 2>/out/hostname-error || true
hostname > /out/hostname
cat /proc/self/uid_map > /out/uid_map
cat /proc/self/gid_map > /out/gid_map
"""
    try:
        files = script_layer(tmp_path, capsys, {"runAsRoot": script})
    finally:
        changed = socket.gethostname() != hostname
        if changed:
            socket.sethostname(hostname)
    assert not changed, "the script renamed the build host"
    assert open(target).read() == "untouched\n"
    assert files["out/hostname"] == b"confined-by-a-test\n"
    pids = [n for n in files["out/proc"].decode().split() if n.isdigit()]
    assert len(pids) <= 3 and "1" in pids, pids  # the script's shell (pid 1) and `ls`
    interfaces = [line.split(":")[0].strip() for line in files["out/net"].decode().splitlines()[2:]]
    assert interfaces == ["lo"]
    # root inside is no id of root outside (its capabilities are its user namespace's alone): no
    # range of either map holds the host's 0
    for name in ("out/uid_map", "out/gid_map"):
        ranges = [[int(n) for n in line.split()] for line in files[name].decode().splitlines()]
        assert ranges and [0, ranges[0][1]] == ranges[0][:2], ranges  # root inside ...
        assert not any(outside <= 0 < outside + count for _, outside, count in ranges), ranges  # ... not outside


def tar_layer(lay: imagegen.Layout, members: list[tuple[str, bytes, bytes, str]]):
    """A layer of (name, type, data, link) members; a character device's link is its "major,minor"."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, len(data)
            if kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = (int(n) for n in link.split(","))
            else:
                info.linkname = link
            info.mode = 0o755 if kind != tarfile.REGTYPE or name == "bin/busybox" else 0o644
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return lay.add(imagegen.Blob(imagegen.LAYER_TYPES["gzip"], imagegen.compress(raw, "gzip"))), imagegen.sha(raw)


@pytest.mark.parametrize("same_layer", [False, True], ids=["later-layer", "same-layer"])
def test_an_entry_under_a_symlink_in_the_base_image(tmp_path, cache_dir, capsys, outside, same_layer):
    """`evil -> /outside`, then `evil/cron.d/job` in a later layer: the script's tree has a
    directory evil, as podman's overlay storage shows it; in the same layer, one line. Never a
    write through the link, never a traceback (as before)."""
    lay = imagegen.Layout()
    busybox = open(BUSYBOX, "rb").read()
    first = [("bin", tarfile.DIRTYPE, b"", ""), ("bin/busybox", tarfile.REGTYPE, busybox, ""),
             ("bin/sh", tarfile.SYMTYPE, b"", "busybox"), ("bin/cat", tarfile.SYMTYPE, b"", "busybox"),
             ("bin/test", tarfile.SYMTYPE, b"", "busybox"), ("evil", tarfile.SYMTYPE, b"", outside)]
    second = [("evil/cron.d", tarfile.DIRTYPE, b"", ""), ("evil/cron.d/job", tarfile.REGTYPE, b"job\n", "")]
    layers = [first + second] if same_layer else [first, second]
    lay.tag(lay.image([tar_layer(lay, members) for members in layers]), "1")
    lay.write(tmp_path / "base")
    script = "test -d /evil && ! test -L /evil && cat /evil/cron.d/job > /seen && echo mine > /evil/cron.d/job"
    if same_layer:
        (tmp_path / "spec.json").write_text(json.dumps({"name": "x/y", "tag": "1", "architecture": "amd64",
                                                        "fromImage": "base", "runAsRoot": script}))
        code, _, err = run(capsys, "build", str(tmp_path / "spec.json"), "--oci", str(tmp_path / "layout"))
        assert code == 1 and "'evil/cron.d'" in err and len(err.strip().splitlines()) == 1, err
    else:
        files = script_layer(tmp_path, capsys, {"runAsRoot": script})
        assert files["seen"] == b"job\n" and files["evil/cron.d/job"] == b"mine\n"
    assert os.listdir(outside) == []


@pytest.mark.parametrize("key", ["runAsRoot", "extraCommands"])
def test_a_kernel_that_refuses_namespaces_is_one_line_not_a_chroot(base_layout, tmp_path, cache_dir, key):
    """With no user namespaces left to make (a user namespace whose limit is 0), runAsRoot, and
    extraCommands run as root, refuse in one line instead of running unconfined (a bare chroot)."""
    (tmp_path / "spec.json").write_text(json.dumps({"name": "x/y", "tag": "1", "architecture": "amd64",
                                                    "fromImage": "base", key: "mkdir ran"}))
    command = [sys.executable, "-m", "registry_tools", "build", str(tmp_path / "spec.json"), "--oci",
               str(tmp_path / "layout")]
    res = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c",
                          'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "-", *command],
                         capture_output=True, text=True, env=dict(os.environ, REGISTRY_TOOLS_CACHE=str(cache_dir)),
                         timeout=120)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert key in lines[0] and "namespaces" in lines[0] and "max_user_namespaces" in lines[0]
    assert "chroot" in lines[0] if key == "runAsRoot" else "run as root" in lines[0]
    assert not (tmp_path / "layout").exists()


def test_extra_and_fake_root_commands_run_as_root_are_contained(tmp_path, cache_dir, capsys, outside):
    """Run as root, extraCommands and fakeRootCommands see the host read-only (even a file anyone
    may write), their own processes and no network; the layer's root is theirs to write."""
    if os.geteuid() != 0:
        pytest.skip("this machine is not root: the commands run as the user, as in nixpkgs")
    target = host_file(outside, mode=0o666)
    extra = (f"echo escaped 2>/dev/null > {target} || true; mkdir -p out; ls /proc > out/proc; "
             "cat /proc/net/dev > out/net; echo made > out/made")
    fake = f"echo escaped 2>/dev/null > {target} || true; chown 7:8 out/made; hostname x 2>/dev/null || true"
    hostname = socket.gethostname()
    (tmp_path / "spec.json").write_text(json.dumps({"name": "x/y", "tag": "1", "architecture": "amd64",
                                                    "extraCommands": extra, "fakeRootCommands": fake}))
    try:
        code, _, err = run(capsys, "build", str(tmp_path / "spec.json"), "--oci", str(tmp_path / "layout"))
    finally:
        changed = socket.gethostname() != hostname
        if changed:
            socket.sethostname(hostname)
    assert code == 0, err
    assert not changed and open(target).read() == "untouched\n"
    with tarfile.open(layers(tmp_path / "layout")[-1]) as tf:
        members = {m.name: m for m in tf}
        files = {n: tf.extractfile(m).read().decode() for n, m in members.items() if m.isreg()}
    assert (members["out/made"].uid, members["out/made"].gid) == (7, 8) and files["out/made"] == "made\n"
    assert len([n for n in files["out/proc"].split() if n.isdigit()]) <= 4
    assert [line.split(":")[0].strip() for line in files["out/net"].splitlines()[2:]] == ["lo"]


# what a script does with /dev, and what it reads there: written under /out
DEV_SCRIPT = """
mkdir /out
echo discarded > /dev/null
test -z "$(cat /dev/null)"
busybox head -c 16 /dev/urandom > /out/urandom
busybox head -c 16 /dev/zero > /out/zero
if echo x 2>/dev/null > /dev/full; then echo wrote > /out/full; fi
echo shared > /dev/shm/x && cat /dev/shm/x > /out/shm
echo through-fd > /dev/fd/1
echo through-stdout > /dev/stdout && echo through-stderr > /dev/stderr && cat /dev/stdin
test -c /dev/null && test -c /dev/random && test -L /dev/stdin
"""


def dev_base(tmp_path, image_dev: bool) -> None:
    """A busybox base image; with `image_dev`, its /dev holds a console device and a file."""
    lay = imagegen.Layout()
    members = [("bin", tarfile.DIRTYPE, b"", ""), ("bin/busybox", tarfile.REGTYPE, open(BUSYBOX, "rb").read(), ""),
               *((f"bin/{a}", tarfile.SYMTYPE, b"", "busybox") for a in ("sh", "cat", "echo", "test", "mkdir"))]
    if image_dev:
        members += [("dev", tarfile.DIRTYPE, b"", ""), ("dev/console", tarfile.CHRTYPE, b"", "5,1"),
                    ("dev/marker", tarfile.REGTYPE, b"the image's\n", "")]
    lay.tag(lay.image([tar_layer(lay, members)]), "1")
    lay.write(tmp_path / "base")


@pytest.mark.parametrize("image_dev", [False, True], ids=["no-dev", "image-dev"])
def test_the_script_has_a_minimal_dev_that_the_layer_never_holds(tmp_path, cache_dir, capsys, image_dev):
    """/dev is the runtime's, as podman's: null, zero, full, random, urandom, fd, std*, shm work;
    nothing written there reaches the layer (nor under it, once unmounted), and the image's own
    /dev stays as the image had it."""
    if os.geteuid() != 0:
        pytest.skip("this machine is not root")
    dev_base(tmp_path, image_dev)
    script = DEV_SCRIPT + ("rm -f /dev/console /dev/marker\necho mine > /dev/marker\n" if image_dev else "")
    script += "busybox umount -l /dev\necho under-the-mount > /dev/marker\n"  # the image's /dev, still not the layer's
    (tmp_path / "spec.json").write_text(json.dumps({"name": "x/y", "tag": "1", "architecture": "amd64",
                                                    "fromImage": "base", "runAsRoot": script}))
    code, _, err = run(capsys, "build", str(tmp_path / "spec.json"), "--oci", str(tmp_path / "layout"))
    assert code == 0, err
    with tarfile.open(layers(tmp_path / "layout")[-1]) as tf:
        members = {m.name: m for m in tf}
        files = {n: tf.extractfile(m).read() for n, m in members.items() if m.isreg()}
    assert [n for n in members if n == "dev" or n.startswith("dev/")] == []
    assert len(files["out/urandom"]) == 16 and files["out/zero"] == bytes(16)
    assert "out/full" not in files and files["out/shm"] == b"shared\n"
    code, _, err = run(capsys, "export", f"oci:{tmp_path / 'layout'}:1", "-o", str(tmp_path / "fs.tar"))
    assert code == 0, err
    with tarfile.open(tmp_path / "fs.tar") as tf:
        dev = {m.name: m for m in tf if m.name.startswith("dev")}
        marker = tf.extractfile(dev["dev/marker"]).read() if "dev/marker" in dev else None
    if not image_dev:
        assert dev == {}
    else:
        assert sorted(dev) == ["dev", "dev/console", "dev/marker"] and marker == b"the image's\n"
        assert dev["dev/console"].ischr() and (dev["dev/console"].devmajor, dev["dev/console"].devminor) == (5, 1)


def test_extra_commands_run_as_root_have_the_same_minimal_dev(tmp_path, cache_dir, capsys):
    """Over the host read-only, the commands' /dev is their own too (as in nixpkgs' sandbox): the
    harmless devices, a writable /dev/shm, none of the host's other devices."""
    if os.geteuid() != 0:
        pytest.skip("this machine is not root: the commands run as the user, as in nixpkgs")
    extra = ("mkdir out; echo discarded > /dev/null; head -c 16 /dev/zero > out/zero; "
             "echo shared > /dev/shm/x; cat /dev/shm/x > out/shm; ls /dev > out/dev")
    (tmp_path / "spec.json").write_text(json.dumps({"name": "x/y", "tag": "1", "architecture": "amd64",
                                                    "extraCommands": extra}))
    code, _, err = run(capsys, "build", str(tmp_path / "spec.json"), "--oci", str(tmp_path / "layout"))
    assert code == 0, err
    with tarfile.open(layers(tmp_path / "layout")[-1]) as tf:
        files = {m.name: tf.extractfile(m).read() for m in tf if m.isreg()}
    assert files["out/zero"] == bytes(16) and files["out/shm"] == b"shared\n"
    assert set(files["out/dev"].decode().split()) - {"tty"} == {"fd", "full", "null", "random", "shm", "stderr",
                                                                "stdin", "stdout", "urandom", "zero"}


def test_an_image_whose_dev_is_no_directory_is_one_line(tmp_path, cache_dir, capsys, outside):
    """The minimal /dev is mounted on the image's /dev: a link there (to the host's `outside`) is
    refused in one line, never followed."""
    if os.geteuid() != 0:
        pytest.skip("this machine is not root")
    lay = imagegen.Layout()
    members = [("bin", tarfile.DIRTYPE, b"", ""), ("bin/busybox", tarfile.REGTYPE, open(BUSYBOX, "rb").read(), ""),
               ("bin/sh", tarfile.SYMTYPE, b"", "busybox"), ("dev", tarfile.SYMTYPE, b"", outside)]
    lay.tag(lay.image([tar_layer(lay, members)]), "1")
    lay.write(tmp_path / "base")
    (tmp_path / "spec.json").write_text(json.dumps({"name": "x/y", "tag": "1", "architecture": "amd64",
                                                    "fromImage": "base", "runAsRoot": "echo x > /dev/null"}))
    code, _, err = run(capsys, "build", str(tmp_path / "spec.json"), "--oci", str(tmp_path / "layout"))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "/dev is not a directory" in err, err
    assert os.listdir(outside) == []


@pytest.mark.parametrize("key", ["runAsRoot", "extraCommands"])
def test_dev_tty_is_not_the_terminal_of_the_build(base_layout, tmp_path, cache_dir, key):
    """Run from a terminal, the build's commands still have no controlling terminal (a session
    of their own, as a container has without -t): /dev/tty cannot reach the user's terminal."""
    if os.geteuid() != 0:
        pytest.skip("this machine is not root")
    if shutil.which("script") is None:
        pytest.fail("util-linux's script is missing: run `bash .ci/run`")
    commands = "mkdir out; if echo reached-the-terminal 2>/dev/null > /dev/tty; then echo yes > out/tty; fi"
    (tmp_path / "spec.json").write_text(json.dumps({"name": "x/y", "tag": "1", "architecture": "amd64",
                                                    "fromImage": "base", key: commands}))
    command = shlex.join([sys.executable, "-m", "registry_tools", "build", str(tmp_path / "spec.json"), "--oci",
                          str(tmp_path / "layout")])
    res = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL, env=dict(os.environ, REGISTRY_TOOLS_CACHE=str(cache_dir)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "reached-the-terminal" not in res.stdout
    with tarfile.open(layers(tmp_path / "layout")[-1]) as tf:
        names = tf.getnames()
    assert "out" in names and "out/tty" not in names
