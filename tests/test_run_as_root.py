"""runAsRoot without a VM: the script runs as root in a chroot of the image's tree; what it changed
is one more layer, deletions as whiteouts that podman honours."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

from .helpers import run

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
    for applet in ("sh", "mkdir", "chown", "rm", "echo", "cat", "ls"):
        os.symlink("busybox", root / "bin" / applet)
    (root / "etc").mkdir()
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
