"""dockerTools' environment helpers from a build spec (fakeNss, caCertificates, binSh, usrBinEnv),
checked by running a busybox image built with them under chroot; and the buildImage keys that
are accepted as nixpkgs has them (copyToRoot, the VM-only keys)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from registry_tools import cli
from registry_tools.builder.plan import FAKE_GROUP, FAKE_PASSWD

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def busybox_spec(tmp_path, **keys):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    os.symlink("busybox", root / "bin" / "id")
    bundle = tmp_path / "bundle.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n")
    spec = {"name": "example/env", "tag": "1", "architecture": "amd64", "contents": ["root"], **keys}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return tmp_path / "spec.json", bundle


def test_helpers_work_under_chroot(tmp_path, cache_dir, capsys):
    if os.geteuid() != 0:
        pytest.skip("chroot needs root (CI runs as root)")
    spec, bundle = busybox_spec(tmp_path, fakeNss=True, caCertificates="bundle.crt", binSh="/bin/busybox",
                                usrBinEnv="/bin/busybox")
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "layout"))
    assert code == 0, err
    code, _, err = run(capsys, "export", f"oci:{tmp_path / 'layout'}:1", "-o", str(tmp_path / "rootfs.tar"))
    assert code == 0, err
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "rootfs.tar"), "-C", str(rootfs)], check=True)
    assert (rootfs / "etc/passwd").read_text() == FAKE_PASSWD and (rootfs / "etc/group").read_text() == FAKE_GROUP
    assert (rootfs / "etc/nsswitch.conf").read_text() == "hosts: files dns\n" and (rootfs / "var/empty").is_dir()

    def chroot(*argv: str) -> str:
        res = subprocess.run([shutil.which("chroot") or "/usr/sbin/chroot", str(rootfs), *argv],
                             capture_output=True, text=True,
                             env={"PATH": "/bin:/usr/bin"})
        assert res.returncode == 0, res.stderr
        return res.stdout

    assert chroot("/bin/id", "nobody").startswith("uid=65534(nobody) gid=65534(nobody)")
    assert chroot("/bin/sh", "-c", "echo from sh") == "from sh\n"
    assert "PATH=/bin:/usr/bin" in chroot("/usr/bin/env")
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-bundle.crt",
                 "/etc/pki/tls/certs/ca-bundle.crt"):
        assert chroot("/bin/sh", "-c", f"/bin/busybox cat {path}") == bundle.read_text()


def test_helper_layer_is_reused_and_contents_win(tmp_path, cache_dir, capsys):
    spec, _ = busybox_spec(tmp_path, fakeNss=True)
    (tmp_path / "root" / "etc").mkdir()
    (tmp_path / "root" / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    code, out, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "a"), "--json")
    assert code == 0, err
    code, out2, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "b"), "--json")
    assert json.loads(out)["manifestDigest"] == json.loads(out2)["manifestDigest"]
    code, _, err = run(capsys, "export", f"oci:{tmp_path / 'a'}:1", "-o", str(tmp_path / "r.tar"))
    import tarfile

    with tarfile.open(tmp_path / "r.tar") as tf:
        assert tf.extractfile("etc/passwd").read() == b"root:x:0:0::/root:/bin/sh\n"  # the contents' own file
        assert tf.extractfile("etc/group").read().decode() == FAKE_GROUP


@pytest.mark.parametrize("change, message", [
    ({"fakeNss": "yes"}, "fakeNss: must be true or false"),
    ({"caCertificates": "missing.crt"}, "caCertificates:"),
    ({"binSh": "bin/busybox"}, "binSh: must be an absolute path"),
    ({"usrBinEnv": 3}, "usrBinEnv: must be the absolute path"),
    ({"copyToRoot": ["root"]}, "copyToRoot: is buildImage's name for contents"),
    ({"diskSize": "big"}, "diskSize: must be a whole number"),
])
def test_bad_helper_keys_name_the_key(tmp_path, cache_dir, capsys, change, message):
    spec, _ = busybox_spec(tmp_path, **change)
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "o"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_copy_to_root_and_vm_keys(tmp_path, cache_dir, capsys, caplog):
    spec, _ = busybox_spec(tmp_path)
    doc = json.loads(spec.read_text())
    doc["copyToRoot"] = doc.pop("contents")
    doc["diskSize"] = 1024
    doc["buildVMMemorySize"] = 512
    spec.write_text(json.dumps(doc))
    import logging

    with caplog.at_level(logging.WARNING, logger="registry_tools.build"):
        code, out, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "o"))
    assert code == 0, err
    notices = [r.getMessage() for r in caplog.records if "no VM is used" in r.getMessage()]
    assert len(notices) == 2 and all("\n" not in n for n in notices)
    assert out.strip() == "example/env:1"  # the tag it chose is printed (nixpkgs' imageTag)
